"""Prometheus metrics of the worker. Labels are closed vocabularies: never session ids or text."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UTTERANCES = Counter("hwm_utterances_total", "Inbound messages by outcome",
                     ["result"])  # ok | duplicate | late | control | no_consent | dead_letter
DEAD_LETTERS = Counter("hwm_dead_letter_total", "Messages sent to the dead-letter topic", ["reason"])
CHECKS_SENT = Counter("hwm_checks_sent_total", "Silence and nudge checks the worker sent through the utterances "
                      "topic (they come back as 'control' inputs)")
MICRODIALOGUES = Counter("hwm_microdialogues_total", "Microdialogues classified")
EVENTS = Counter("hwm_homework_events_total", "Homework events emitted", ["category"])
SUMMARIES = Counter("hwm_session_summaries_total", "Session summaries emitted", ["homework_assigned"])

# Clinicians' surfaces (docs/NUDGES.md).
NUDGES = Counter("hwm_nudges_total", "Nudges emitted", ["rule"])  # no_homework_yet | review_previous | not_yet_reviewed
SESSIONS_OPENED = Counter("hwm_sessions_opened_total", "Sessions announced on session-opened")
SESSIONS_WITHOUT_CONSENT = Counter("hwm_sessions_without_consent_total",
                                   "Sessions declined (consent false, or none where HWM_REQUIRE_CONSENT): nothing "
                                   "of them is processed or stored")
REVIEWS = Counter("hwm_homework_reviews_total", "Therapist turns found to review the previous session's homework",
                  ["source"])  # rule | model
CLIENT_HISTORY_UPDATES = Counter("hwm_client_history_updates_total",
                                 "Summaries recorded in the per-client homework history")
CLASSIFIER_SECONDS = Histogram("hwm_classifier_request_seconds", "One classifier call (a micro-batch)",
                               buckets=(.005, .01, .025, .05, .1, .15, .2, .25, .3, .4, .5, 1, 2, 5))
CLASSIFIER_BATCH = Histogram("hwm_classifier_batch_size", "Microdialogues per classifier call",
                             buckets=(1, 2, 4, 8, 16, 32, 64, 128))
CLASSIFIER_ERRORS = Counter("hwm_classifier_errors_total", "Failed classifier attempts",
                            ["kind"])  # timeout | unavailable | server_error | rejected | other
CLASSIFIER_INFLIGHT = Gauge("hwm_classifier_inflight", "Classifier calls in flight")
LATENCY = Histogram("hwm_utterance_to_event_seconds",
                    "From the utterance that completed a microdialogue to its event being emitted",
                    buckets=(.01, .025, .05, .075, .1, .15, .2, .25, .3, .4, .5, .75, 1, 2, 5))
ACTIVE_SESSIONS = Gauge("hwm_active_sessions", "Sessions open on this worker")
INBOUND_LAG = Histogram("hwm_inbound_lag_seconds",
                        "From the producer's Kafka timestamp to the worker starting on the record",
                        buckets=(.005, .01, .025, .05, .1, .2, .3, .5, .75, 1, 2, 5))

# Health (stream/health.py decides; stream/probes.py exports). Partition labels are partition numbers.
WORKER_LIVE = Gauge("hwm_worker_live", "1 while /healthz passes")
WORKER_READY = Gauge("hwm_worker_ready", "1 while /readyz passes")
NOT_READY = Gauge("hwm_worker_not_ready", "1 for each reason /readyz fails now", ["reason"])
FATAL = Counter("hwm_worker_fatal_total", "Fatal errors that stop the worker (exit code 1)",
                ["reason"])  # batch_failed | classifier_unavailable | stalled | broker_data_lost | broker_unreachable
PARTITION_STALLS = Counter("hwm_partition_stalls_total",
                           "Times a partition had lag and made no progress for HWM_STALL_TIMEOUT_S")
CONSUMER_LAG = Gauge("hwm_consumer_lag", "Records past this worker's position (a lower bound)", ["partition"])
BROKER_PROBE_FAILURES = Counter("hwm_broker_probe_failures_total", "Broker probes that failed or timed out")
BROKER_DATA_LOST = Counter("hwm_broker_data_lost_total",
                           "Partitions whose committed offset or log end went backwards (broker lost its data)")
COMMITS_REFUSED = Counter("hwm_offset_commits_refused_total",
                          "Offset commits refused after a batch could not be finished")

# Source positions and retired sessions (docs/RESTARTS.md).
SOURCE_REWINDS = Counter("hwm_source_rewinds_total",
                         "Source partitions read again because a record after the stored position was missing")
SOURCE_GAP_RECORDS = Counter("hwm_source_gap_records_total",
                             "Source offsets never received (not in the log: retention or control records)")
SESSIONS_EXPIRED = Counter("hwm_sessions_expired_total", "Retired session tombstones deleted after the grace period")
