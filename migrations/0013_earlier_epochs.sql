-- Epochs a partition's checkpoint left earlier, each with the last id applied in it: when an older copy
-- of Valkey's data comes back (a backup restored, a switch back to the old server), reading resumes
-- after what was applied in that stream instead of starting it over.
ALTER TABLE "partition_checkpoints" ADD COLUMN "earlier_epochs" jsonb DEFAULT '[]'::jsonb NOT NULL;