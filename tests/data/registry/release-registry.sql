PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES(8);
CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
INSERT INTO settings VALUES('payload_version','1.0');
INSERT INTO settings VALUES('unknown_policy','install');
INSERT INTO settings VALUES('install_token_ttl','7200');
CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
INSERT INTO secrets VALUES('registry_key','545b80d798a047c65c1de7c02c67afc969f9060202e1bb87e87730b61542a446');
INSERT INTO secrets VALUES('api_token_hash','7b3ebabd0af754378e4e16c7beb1775dd9a80d2c9e085dab684c48d852191cae');
CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            template TEXT NOT NULL,
            boot_chain TEXT NOT NULL,
            xen_args TEXT NOT NULL,
            kernel_args TEXT NOT NULL,
            payload_version TEXT
        , san_boot INTEGER NOT NULL DEFAULT 0, multipath INTEGER NOT NULL DEFAULT 0, storage_nic TEXT NOT NULL DEFAULT 'net1');
INSERT INTO profiles VALUES('default',replace('<?xml version="1.0" encoding="UTF-8"?>\n{#- The default profile: a fresh install from this server''s repository (SPEC §5, §9).\n    The renderer provides mac, name, server, repo_url, every host variable, and\n    root_password_hash when the host has a root_password variable. Host variables\n    used here: disk (default sda), keymap (us), timezone (Etc/UTC). #}\n<installation mode="fresh">\n  <primary-disk>{{ disk | default("sda") | e }}</primary-disk>\n  <keymap>{{ keymap | default("us") | e }}</keymap>\n{%- if root_password_hash is defined and root_password_hash %}\n  <root-password type="hash">{{ root_password_hash | e }}</root-password>\n{%- endif %}\n  <source type="url">{{ repo_url | e }}</source>\n  <admin-interface name="eth0" proto="dhcp"/>\n{%- if name is defined and name %}\n  <hostname>{{ name | e }}</hostname>\n{%- endif %}\n  <timezone>{{ timezone | default("Etc/UTC") | e }}</timezone>\n</installation>\n','\n',char(10)),'seed','dom0_max_vcpus=1-2 dom0_mem=2048M,max:2048M com1=115200,8n1 console=com1,vga','xencons=hvc console=tty0 console=hvc0 net.ifnames=0',NULL,0,0,'net1');
INSERT INTO profiles VALUES('san',replace('<?xml version="1.0" encoding="UTF-8"?>\n{#- The default profile: a fresh install from this server''s repository (SPEC §5, §9).\n    The renderer provides mac, name, server, repo_url, every host variable, and\n    root_password_hash when the host has a root_password variable. Host variables\n    used here: disk (default sda), keymap (us), timezone (Etc/UTC). #}\n<installation mode="fresh">\n  <primary-disk>{{ disk | default("sda") | e }}</primary-disk>\n  <keymap>{{ keymap | default("us") | e }}</keymap>\n{%- if root_password_hash is defined and root_password_hash %}\n  <root-password type="hash">{{ root_password_hash | e }}</root-password>\n{%- endif %}\n  <source type="url">{{ repo_url | e }}</source>\n  <admin-interface name="eth0" proto="dhcp"/>\n{%- if name is defined and name %}\n  <hostname>{{ name | e }}</hostname>\n{%- endif %}\n  <timezone>{{ timezone | default("Etc/UTC") | e }}</timezone>\n</installation>\n','\n',char(10)),'seed','dom0_max_vcpus=1-2 dom0_mem=2048M,max:2048M com1=115200,8n1 console=com1,vga','xencons=hvc console=tty0 console=hvc0 net.ifnames=0','1.1',1,1,'net2');
CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            mac TEXT NOT NULL,
            state TEXT NOT NULL,
            step TEXT,
            progress REAL,
            message TEXT
        );
INSERT INTO events VALUES(1,1796667544.0469594001,'52:54:00:00:01:01','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(2,1796667544.0472435951,'52:54:00:00:01:02','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(3,1796667544.0475542544,'52:54:00:00:01:02','signalled',NULL,NULL,'fetched its boot configuration');
INSERT INTO events VALUES(4,1796667544.0478060245,'52:54:00:00:01:03','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(5,1796667544.0480325222,'52:54:00:00:01:03','signalled',NULL,NULL,'fetched its boot configuration');
INSERT INTO events VALUES(6,1796667544.0482621192,'52:54:00:00:01:03','signalled',NULL,NULL,'installer enrolled from 192.0.2.3');
INSERT INTO events VALUES(7,1796667544.048428297,'52:54:00:00:01:03','installing','partition',0.2000000000000000111,NULL);
INSERT INTO events VALUES(8,1796667544.048566103,'52:54:00:00:01:03','installing','download',0.59999999999999997779,NULL);
INSERT INTO events VALUES(9,1796667544.048682928,'52:54:00:00:01:04','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(10,1796667544.0489485263,'52:54:00:00:01:04','installed',NULL,NULL,'done');
INSERT INTO events VALUES(11,1796667544.0490734576,'52:54:00:00:01:05','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(12,1796667544.0492084025,'52:54:00:00:01:05','installed',NULL,NULL,NULL);
INSERT INTO events VALUES(13,1796667544.049463272,'52:54:00:00:01:05','running',NULL,NULL,NULL);
INSERT INTO events VALUES(14,1796667544.0496594905,'52:54:00:00:01:05','running',NULL,NULL,'first check-in: running 1.0');
INSERT INTO events VALUES(15,1796667544.0498523711,'52:54:00:00:01:06','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(16,1796667544.0500102043,'52:54:00:00:01:06','failed',NULL,NULL,'disk sda not found');
INSERT INTO events VALUES(17,1796667544.0501716136,'52:54:00:00:01:07','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(18,1796667544.0503165722,'52:54:00:00:01:07','installed',NULL,NULL,NULL);
INSERT INTO events VALUES(19,1796667544.0504705906,'52:54:00:00:01:07','running',NULL,NULL,NULL);
INSERT INTO events VALUES(20,1796667544.0507423877,'52:54:00:00:01:07','pending',NULL,NULL,'assigned: upgrade to 1.1 (reboot manual)');
INSERT INTO events VALUES(21,1796667544.0512609482,'52:54:00:00:01:08','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(22,1796667544.0513978004,'52:54:00:00:01:09','pending',NULL,NULL,'added to the registry');
INSERT INTO events VALUES(23,1796667544.0515501499,'52:54:00:00:01:09','signalled',NULL,NULL,'fetched its boot configuration');
INSERT INTO events VALUES(24,1796667544.0517513752,'52:54:00:00:01:09','signalled',NULL,NULL,'installer enrolled from 192.0.2.9');
INSERT INTO events VALUES(25,1796667544.0519206523,'52:54:00:00:01:09','signalled',NULL,NULL,'enrolment refused: 2026-12-07T18:19:04Z: an installer at 192.0.2.99 presented the install token while the key enrolled from 192.0.2.9 at 2026-12-07T18:19:04Z is live; refused');
CREATE TABLE repositories (
            version TEXT PRIMARY KEY,
            directory TEXT NOT NULL,
            added REAL NOT NULL
        );
INSERT INTO repositories VALUES('1.0','/tmp/relreg/repo-1.0',1796667544.0432808398);
INSERT INTO repositories VALUES('1.1','/tmp/relreg/repo-1.1',1796667544.0433347225);
CREATE TABLE IF NOT EXISTS "hosts" (
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
    token_sealed TEXT,
    token_hash TEXT UNIQUE,
    agent_credential_hash TEXT UNIQUE,
    facts TEXT NOT NULL DEFAULT '{}',
    work TEXT,
    reboot_policy TEXT NOT NULL DEFAULT 'auto',
    last_checkin REAL,
    san TEXT
, install_key_hash TEXT, enrolled_from TEXT, enrolled_at REAL, ticket_issued_at REAL, token_expires REAL, conflict TEXT, revision INTEGER NOT NULL DEFAULT 0, event_count INTEGER NOT NULL DEFAULT 0);
INSERT INTO hosts VALUES('52:54:00:00:01:01','pending01','default','{"root_password": "$6$79dJNG8XajoyzCHg$Em4ZqkSRhBrty0UNVzq4HQEznTIYfyeChaTz//FTqVltCxE1GQsryNoM2qEUMrsH8gkN1YQK6CWtX9/iJjrKS/"}',1,'pending',NULL,NULL,'1.0',NULL,'zJUU0M-ng4ZhUOIdT3ZlaDA3jTrt1YjH0Oa8p2FPUuE-QkOomujzAxcEOIizmik9VnywWR481TBFiEEy','802195b15623ec81036c09e06b02afe1b257a7d98442e35f03eebcd5a31d5f16',NULL,'{}','install','auto',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,6,1);
INSERT INTO hosts VALUES('52:54:00:00:01:02','signalled01','default','{}',1,'signalled',NULL,NULL,'1.0',NULL,'kFW96ySo2gsvs6ofk87RLAW6woLyaWYgn6kby9Zemv4SZwCvaHFX-_rtUVCxj9mqfvxdIzCSbxyAH8KO','5bdd80837aaa3913fb5fb60cfce5846bb584c501d3bf0b2a8b4e2f3e721959ad',NULL,'{}','install','auto',NULL,NULL,NULL,NULL,NULL,1796667544.0474441051,1796674744.0474441051,NULL,8,2);
INSERT INTO hosts VALUES('52:54:00:00:01:03','installing01','default','{}',1,'installing','download',0.59999999999999997779,'1.0',NULL,'B4epdD2tI1U4VaV69X-Gx5vgjOQT3NETywvPYbe5XyMu7hSrYpJOYopzFOil8qGr-bg4ME6su-hF2Cti','9906b1a79702dfb38f1fe34401e2bdd1d444744c395438b950d883474a388af9',NULL,'{}','install','auto',NULL,NULL,'cad8ec223a26b51578045f83208db2aadbb5dea4b942b97d6b5e60d94351cb80','192.0.2.3',1796667544.0481054783,1796667544.047962904,1796674744.0479629039,NULL,11,5);
INSERT INTO hosts VALUES('52:54:00:00:01:04','installed01','default','{}',0,'installed',NULL,NULL,'1.0',NULL,'uIy4gSeBNKeBetBssCL9qge4CZ2BOEXpBuSvnEjRuyKiMEG3tKP1VJiIHQQdl1BTgBegnrMbp77J_yva','40f36d44af1ce1377150f7ccecac719fc8641ee44bf5c7718eb70416d0de292e',NULL,'{}','install','auto',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,13,2);
INSERT INTO hosts VALUES('52:54:00:00:01:05','running01','default','{}',0,'running',NULL,NULL,'1.0','1.0',NULL,NULL,'28b7249adc365dc1c864fd5d784056110d74e7caf79e273fa3130ccfdc37399e','{"cpus": 4, "payload_version": "1.0"}',NULL,'auto',1796667544.0495734214,NULL,NULL,NULL,NULL,NULL,NULL,NULL,16,4);
INSERT INTO hosts VALUES('52:54:00:00:01:06','failed01','default','{}',0,'failed',NULL,NULL,'1.0',NULL,'gAvqkGzgE5WnVsgNQw5DCb3Igqtj1ja8Do12lYB51I25CGElyKY5kJTQ1-yO3k76FJmu85ZJamIY2Kqd','f304c8472fa2a95105a206a1fe871be5e1bfe5d82c99c34993a18b24e1c3b317',NULL,'{}','install','auto',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,18,2);
INSERT INTO hosts VALUES('52:54:00:00:01:07','upgrade01','default','{}',0,'pending',NULL,NULL,'1.1','1.0','7cxNIFHe5EoK03oyEXzVJ4OkQwizELOqXbRIQR1GcALcFN1aRqPVTqI7EwVB73HuzH5Ijyx1PlCq8dg3','88a7c4b5a6f67ff6422053aeec3f739d0f98bd469487802d07d531be0e38c8ac','b59a0e3ecbb651c70e1144a7351fc297be42ed767790eb131c790f7845f1a381','{"payload_version": "1.0"}','upgrade','manual',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,22,4);
INSERT INTO hosts VALUES('52:54:00:00:01:08',NULL,'san','{}',1,'pending',NULL,NULL,'1.1',NULL,'8dFcoNxZpygxDeODpcwWzlSCrxGzJWK7pQTkupyuBMgcyJh0Q5UpDhLHWI1j2Cc4fneQXmoDKjfOUkE0','f249bdcd202f2169131dbbf283aa31ed8650cdc4fc07aaeefc9b0b9a6f8e0188',NULL,'{}','install','auto',NULL,'{"address": "198.51.100.8/24", "gateway": null, "initiator": null, "paths": ["iscsi:192.0.2.51::3260:0:iqn.2026-01.example:root"], "root_path": "iscsi:192.0.2.50::3260:0:iqn.2026-01.example:root"}',NULL,NULL,NULL,NULL,NULL,NULL,23,1);
INSERT INTO hosts VALUES('52:54:00:00:01:09','conflict01','default','{}',1,'signalled',NULL,NULL,'1.0',NULL,'OT1jhmti-PsS4s_f1S6vUKJYQwDAhfhMnwc0_s3OQRbKy7mtBhkIzBbdkH7bBTN9K4h7CfbiB_1WGhxS','b50d53fa7dc23832b090af5f22cc3b118ecfb77edd48ba3e6d0d8a7898692485',NULL,'{}','install','auto',NULL,NULL,'93075dc2c5a1d3b12617f277856363ae03d031f46eaab1d4c0315fca238577ac','192.0.2.9',1796667544.0516076087,1796667544.0514988899,1796674744.0514988899,'2026-12-07T18:19:04Z: an installer at 192.0.2.99 presented the install token while the key enrolled from 192.0.2.9 at 2026-12-07T18:19:04Z is live; refused',25,4);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES('revision',26);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('events',26);
CREATE INDEX events_by_mac ON events (mac, id);
CREATE UNIQUE INDEX hosts_by_install_key ON hosts (install_key_hash);
CREATE INDEX hosts_by_profile ON hosts (profile);
COMMIT;
