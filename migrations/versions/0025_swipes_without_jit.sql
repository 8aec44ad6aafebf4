-- Revision 0025 (frozen): the swipes without JIT.
-- - validate_entry, validate_entries, process_exit and is_fraud run with jit
--   off. They run with enable_seqscan off, and before PostgreSQL 18 a disabled
--   scan is costed 10^10, far over jit_above_cost: on a server built with JIT
--   (Debian's and most packages are) every call compiled its statements
--   (measured on PostgreSQL 15: 90 ms a swipe instead of 0.1).
-- Only function settings change: the upgrade takes no lock on a table.
SET search_path = metro, pg_catalog;

ALTER FUNCTION validate_entry(bigint, integer, timestamptz) SET jit = off;
ALTER FUNCTION validate_entries(bigint[], integer[], timestamptz[]) SET jit = off;
ALTER FUNCTION process_exit(bigint, integer, timestamptz) SET jit = off;
ALTER FUNCTION is_fraud(bigint, integer, timestamptz) SET jit = off;
