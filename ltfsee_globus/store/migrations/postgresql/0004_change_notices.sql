-- 4: tell every process which files' rows changed, so the poll answers each
-- keeps in memory (store/postgres_changes.py) are dropped at once. One notice per file
-- (the md5 of its path: a notice holds at most 8,000 bytes), or '*' (drop
-- everything) from a statement that changed more than 64 rows. Notices go
-- out at COMMIT, to the listeners only; a rolled-back change sends none.
CREATE FUNCTION ltfsee_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM changed LIMIT 65) AS many) > 64 THEN
        PERFORM pg_notify('ltfsee_files', '*');
    ELSE
        PERFORM pg_notify('ltfsee_files', md5(path)) FROM changed;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER files_inserted_notice AFTER INSERT ON files
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
CREATE TRIGGER files_updated_notice AFTER UPDATE ON files
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
CREATE TRIGGER files_deleted_notice AFTER DELETE ON files
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
CREATE TRIGGER requesters_inserted_notice AFTER INSERT ON requesters
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
CREATE TRIGGER requesters_deleted_notice AFTER DELETE ON requesters
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
CREATE TRIGGER requesters_updated_notice AFTER UPDATE ON requesters
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION ltfsee_notify_changed();
