-- Each account's netcode client id: stable across logins, unique among players. Accounts made
-- before this column existed get one at their next login.
ALTER TABLE accounts ADD COLUMN player_id BIGINT;
CREATE UNIQUE INDEX accounts_player_id ON accounts (player_id);
