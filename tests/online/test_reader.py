"""The online read's one point-in-time rule (``OnlineReader.status_codes``), at its boundaries. It must
be the training join's (``mmfs.store.pit_join``): a value is used at T when T - ttl <= its stamp <= T."""
import datetime as dt

import numpy as np

from mmfs.online.reader import FUTURE_CODE, MISSING_CODE, MISSING_US, OnlineReader, PRESENT_CODE, STALE_CODE, stamp_us

UTC = dt.timezone.utc
ONE_US = dt.timedelta(microseconds=1)


def reader_with(ttls: dict) -> OnlineReader:
    """An OnlineReader with only its TTLs set: ``status_codes`` needs nothing else."""
    reader = OnlineReader.__new__(OnlineReader)
    reader._ttl = ttls
    return reader


def test_ttl_future_and_missing_at_their_boundaries():
    now, ttl = dt.datetime(2024, 3, 1, 12, tzinfo=UTC), dt.timedelta(days=10)
    stamps = {"at now": now, "at now - ttl": now - ttl, "1 us older than ttl": now - ttl - ONE_US,
              "1.5 ttl old": now - ttl * 1.5, "1 us after now": now + ONE_US, "a year ago": now - dt.timedelta(days=365)}
    reader = reader_with({"seq": ttl, "stats": None})
    stamped = np.array([stamp_us(t) for t in stamps.values()] + [MISSING_US], np.int64)
    assert dict(zip([*stamps, "none"], reader.status_codes("seq", stamped, now).tolist())) == {
        "at now": PRESENT_CODE, "at now - ttl": PRESENT_CODE, "1 us older than ttl": STALE_CODE, "1.5 ttl old": STALE_CODE,
        "1 us after now": FUTURE_CODE, "a year ago": STALE_CODE, "none": MISSING_CODE}
    # A view without a TTL (running counters, embeddings): old is present, later than now is still future.
    assert reader.status_codes("stats", stamped, now).tolist() == [PRESENT_CODE] * 4 + [FUTURE_CODE, PRESENT_CODE, MISSING_CODE]
