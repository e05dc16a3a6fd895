-- The dialer's clock: Redis TIME (+ the test-only offset), in milliseconds.
-- KEYS: 1 clock
return now_ms()
