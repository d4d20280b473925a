"""The wire format of ``ad-request-counts``: one ad-server worker's exact serve-request counts over a window.

Each worker publishes one record per window (``ADP_REQUEST_COUNT_INTERVAL_S``, a minute by default) in which
it answered a serve request, and one for the partial window when it stops. Records are counted, not
sampled: summed over workers and windows they give the exact number of requests, served ads and no-fills,
hence the reports' fill rate = served / requests. A record that had to be sent again (Kafka did not
acknowledge it in time) keeps its ``record_id``, so readers de-duplicate on it.
"""

from __future__ import annotations

from typing import Final

import msgspec


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Serve requests one worker answered in ``[start_ms, end_ms)``, by outcome.

    ``requests`` (served + no-fill) are the valid requests that reached the auction: the fill rate's
    denominator. Requests refused before it are counted beside, not in it: ``rejected`` (422, bad
    parameters) and ``not_ready`` (503 while the worker's index loads).
    """

    #: ``<worker>:<seq>``: unique per record, stable across re-sends (the de-duplication key).
    record_id: str
    #: ``<host>-<pid>-<random>``: one worker process's life (a pid can be reused after a restart).
    worker: str
    #: 0, 1, 2, … per worker: a gap means a lost record (a worker killed before its window closed).
    seq: int
    start_ms: int
    end_ms: int
    served: int
    no_fill: int
    #: No-fills by reason (``adserver_no_fill_total{reason}``); the values add up to ``no_fill``.
    no_fill_reasons: dict[str, int]
    rejected: int
    not_ready: int

    @property
    def requests(self) -> int:
        return self.served + self.no_fill


counts_encoder: Final = msgspec.json.Encoder()
counts_decoder: Final = msgspec.json.Decoder(RequestCounts)
