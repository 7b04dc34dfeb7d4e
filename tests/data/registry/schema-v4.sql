-- The registry's schema at version 4 (netinstall before issue 16), as SQLite holds it after
-- migrations 1-4 (pxe_server/migrations.py at main 1224671): the fixture the secrets
-- migration test builds an old registry from. Never edit: it is what shipped.
CREATE TABLE schema_version (version INTEGER NOT NULL);

CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );

CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            template TEXT NOT NULL,
            boot_chain TEXT NOT NULL,
            xen_args TEXT NOT NULL,
            kernel_args TEXT NOT NULL,
            payload_version TEXT
        , san_boot INTEGER NOT NULL DEFAULT 0, multipath INTEGER NOT NULL DEFAULT 0, storage_nic TEXT NOT NULL DEFAULT 'net1');

CREATE TABLE hosts (
            mac TEXT PRIMARY KEY,
            name TEXT,
            profile TEXT NOT NULL REFERENCES profiles(name),
            variables TEXT NOT NULL DEFAULT '{}',
            netboot_armed INTEGER NOT NULL,
            state TEXT NOT NULL,
            step TEXT,
            progress REAL,
            assigned_version TEXT,
            running_version TEXT,
            token TEXT UNIQUE,
            agent_credential TEXT UNIQUE
        , facts TEXT NOT NULL DEFAULT '{}', work TEXT, reboot_policy TEXT NOT NULL DEFAULT 'auto', last_checkin REAL, san TEXT);

CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            mac TEXT NOT NULL,
            state TEXT NOT NULL,
            step TEXT,
            progress REAL,
            message TEXT
        );

CREATE INDEX events_by_mac ON events (mac, id);

CREATE TABLE repositories (
            version TEXT PRIMARY KEY,
            directory TEXT NOT NULL,
            added REAL NOT NULL
        );

INSERT INTO schema_version (version) VALUES (4);
