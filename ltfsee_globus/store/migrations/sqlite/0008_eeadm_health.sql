-- 8: how eeadm answered lately, per subcommand, whichever process ran it
CREATE TABLE eeadm_health (
    subcommand TEXT PRIMARY KEY,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    seconds REAL NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at REAL
);

