-- 6: what operators changed by hand (the CLI), who and when
CREATE TABLE operator_actions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    files INTEGER NOT NULL
);

