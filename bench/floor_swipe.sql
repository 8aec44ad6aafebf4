-- The floor of any swipe function, for the validate_entry benchmark: what every
-- swipe must do whatever its rules (lock the card, charge it, record the
-- event in metro's card_events) and nothing else, as a SECURITY DEFINER
-- function like validate_entry. Installed by bench/bench_validate_entry.py
-- into the benchmark's scratch database in its own schema `floor`; never part
-- of the product. What validate_entry costs above it is its decision: the
-- station, the rules' read of recent events, the outcome.

CREATE SCHEMA floor;

CREATE FUNCTION floor.swipe(p_card bigint, p_station integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = metro, pg_temp AS $$
BEGIN
    PERFORM FROM cards c WHERE c.card_id = p_card FOR NO KEY UPDATE;
    UPDATE cards c SET balance = c.balance - 1 WHERE c.card_id = p_card;
    INSERT INTO card_events (card_id, ts, station_id, activity_code, amount, accept)
    VALUES (p_card, now(), p_station, 1, 1, 1);
    RETURN true;
END
$$;
