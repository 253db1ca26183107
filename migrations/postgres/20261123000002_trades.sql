-- The replay dataset: a wallet's trades, numbered 1, 2, 3 … per wallet.
CREATE TABLE trades (
    wallet TEXT NOT NULL,
    id BIGINT NOT NULL,
    -- Trade time, µs since the Unix epoch.
    ts BIGINT NOT NULL,
    market TEXT NOT NULL,
    side TEXT NOT NULL,
    price DOUBLE PRECISION NOT NULL,
    qty DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (wallet, id)
);
