-- 5: the stager lease (one leader across nodes, an epoch per take-over), the
-- processes with a stager thread (members), and which node and epoch started
-- each batch (what a new leader needs to take a dead one's recalls over)
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text,
    node text,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at double precision NOT NULL DEFAULT 0,
    taken_at double precision
);
INSERT INTO leases (name) VALUES ('stager');

CREATE TABLE members (
    owner text PRIMARY KEY,
    node text NOT NULL,
    role text NOT NULL,
    version text NOT NULL,
    epoch bigint,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL
);

ALTER TABLE batches ADD COLUMN node text;
ALTER TABLE batches ADD COLUMN epoch bigint;
