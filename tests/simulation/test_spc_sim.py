from linewatch.simulation.spc import simulate_spc


def test_event_ids_match_the_records_they_describe():
    sim = simulate_spc(n_parts=50, seed=3)
    assert sim.event_ids() == [str(r.event_id) for r in sim.records()]
