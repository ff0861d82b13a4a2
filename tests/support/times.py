"""Time helpers for tests' inline rows."""
import datetime as dt


def ts(text: str) -> dt.datetime:
    """A naive UTC datetime from 'YYYY-MM-DD HH:MM:SS[.ffffff]', as Spark's collect() returns them."""
    return dt.datetime.fromisoformat(text)
