-- Last in the tree: no function of schema metro is executable by PUBLIC.
-- PostgreSQL grants EXECUTE on every new function to PUBLIC, and ALTER
-- DEFAULT PRIVILEGES IN SCHEMA cannot take that away (per-schema defaults
-- only add to the global ones). Each file revokes its own functions; this
-- catches any it missed. Only the roles named in each file's grants may call
-- a function (tests/test_roles.py lists them all).
SET search_path = metro, pg_catalog;

-- grants
REVOKE ALL ON ALL ROUTINES IN SCHEMA metro FROM PUBLIC;
