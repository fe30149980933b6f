"""Test helpers shared by the tests and the fuzzing harness: the seed corpus's tiny files (make_corpus) and the
harness's targets (fuzz_readers). pytest puts tests/ on sys.path, so the tests import them as the package `fuzz`."""
