"""How long `verify` waits for a broker, and how much it reads at once."""

from bridge.brokers.base import ReadLimits

CONNECT_TIMEOUT = 10.0  # seconds for a broker to answer at all
FETCH_TIMEOUT = 10.0  # seconds one JetStream fetch may take
SCAN_BATCH = 2000  # headers-only messages per JetStream fetch
KAFKA_STALL = 30.0  # seconds Kafka may deliver nothing before the read counts as failed
STREAM_IDLE = 5.0  # seconds without a delivery after which a stream queue has nothing more
STREAM_STALL = 30.0  # seconds one stream-queue fetch may take (a lost connection reconnects forever)

# What a read of a source by position (verify's and repair's) is given.
READS = ReadLimits(seconds=CONNECT_TIMEOUT, stall=KAFKA_STALL, fetch_stall=STREAM_STALL, idle=STREAM_IDLE)
