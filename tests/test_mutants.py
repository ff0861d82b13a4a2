"""The mutant list stays in step with the code: each mutant's text is found exactly once in its file,
and each names tests that exist (``python -m tests.mutants`` itself runs under make test-all)."""
from tests.mutants import MUTANTS, REPO


def test_every_mutant_applies_and_names_existing_tests():
    for m in MUTANTS:
        assert (REPO / m.path).read_text().count(m.old) == 1, m.name
        assert m.old != m.new, m.name
        for test in m.tests:
            path, _, name = test.partition("::")
            assert (REPO / path).is_file(), (m.name, test)
            assert not name or f"def {name}(" in (REPO / path).read_text(), (m.name, test)
