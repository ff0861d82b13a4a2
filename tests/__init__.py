"""mmfs tests: a package, so that tests/pipelines, tests/model and tests/serving are tests.pipelines (...) and never shadow the source packages of the same names."""
