"""Layer surgery: plans (execution orders of stored blocks), their cost, and depth reduction."""
