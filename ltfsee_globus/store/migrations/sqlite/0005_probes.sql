-- 5: what readiness checks write, to know the store takes writes
CREATE TABLE probes (name TEXT PRIMARY KEY, at REAL NOT NULL);

