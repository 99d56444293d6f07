"""Jobs: bounded work run to completion (Job, JobAttempt, schedules)."""
