-- The epoch of the Valkey stream a partition's checkpoint belongs to: a stream made anew (its
-- server's data lost, or the server replaced) restarts its ids from that server's clock, which may be
-- behind the old checkpoint. The aggregator then reads the new stream from its start.
ALTER TABLE "partition_checkpoints" ADD COLUMN "stream_epoch" text;