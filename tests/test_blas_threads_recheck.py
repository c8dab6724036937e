"""The BLAS-thread choice's recheck (``srcgrad.training.blas_threads.ThreadChoice``) costs less
than the first choice: a clear loser is timed on short chunks, and a choice that still leads is
confirmed after ``EARLY_ROUNDS`` rounds, while a reversal needs the full ``ROUNDS``. Injected
timings only (the logic, no clock)."""
from srcgrad.training import blas_threads as bt


def _rounds(choice, cost, rounds):
    """``rounds`` rounds of timed chunks, each the size the choice asks for; ``cost[threads]``
    seconds per batch. Returns {threads: batches timed}."""
    timed = {}
    for _ in range(rounds):
        for _ in choice.tries:
            threads, is_timed = choice.next()
            assert is_timed
            k = choice.chunk(threads)
            choice.record(threads, cost[threads] * k, k)
            timed[threads] = timed.get(threads, 0) + k
    return timed


def _decided(cost):
    """A two-candidate choice decided on ``cost`` after the full ROUNDS (a lead under
    EARLY_LEAD, like MNIST batch 64's 1.39x), then due for its recheck."""
    choice = bt.ThreadChoice([2, 1])
    assert _rounds(choice, cost, bt.ROUNDS) == {2: bt.ROUNDS * bt.CHUNK, 1: bt.ROUNDS * bt.CHUNK}
    assert choice.threads == 2 and choice.decisions == [(2, bt.ROUNDS)]
    choice.trained(choice.interval())
    assert choice.threads is None
    return choice


def test_recheck_confirms_after_early_rounds_on_short_loser_chunks():
    cost = {2: 1.0, 1: 1.39}
    choice = _decided(cost)
    assert choice.chunk(1) == bt.MIN_CHUNK and choice.chunk(2) == bt.CHUNK
    timed = _rounds(choice, cost, bt.EARLY_ROUNDS)
    assert choice.threads == 2 and choice.decisions == [(2, bt.ROUNDS), (2, bt.EARLY_ROUNDS)]
    # the loser ran EARLY_ROUNDS short chunks: 12 batches instead of the first choice's 48
    assert timed == {2: bt.EARLY_ROUNDS * bt.CHUNK, 1: bt.EARLY_ROUNDS * bt.MIN_CHUNK}
    assert choice.backoff == 2                       # confirmed: the next recheck comes later


def test_recheck_that_reverses_the_order_needs_the_full_rounds():
    choice = _decided({2: 1.0, 1: 1.39})
    cost = {2: 1.0, 1: 0.8}                          # the load changed: 1 thread leads by 1.25x
    _rounds(choice, cost, bt.EARLY_ROUNDS)
    assert choice.threads is None                    # not a confirmation, not a clear lead
    _rounds(choice, cost, bt.ROUNDS - bt.EARLY_ROUNDS)
    assert choice.threads == 1 and choice.decisions[-1] == (1, bt.ROUNDS)
    assert choice.backoff == 1


def test_recheck_with_the_choice_barely_ahead_measures_on():
    choice = _decided({2: 1.0, 1: 1.39})
    cost = {2: 1.0, 1: 1.03}                         # 3% apart: under MARGIN, no confirmation
    _rounds(choice, cost, bt.EARLY_ROUNDS)
    assert choice.threads is None
    _rounds(choice, cost, bt.MAX_ROUNDS - bt.EARLY_ROUNDS)
    assert choice.threads == 2 and choice.decisions[-1] == (2, bt.MAX_ROUNDS)


def test_recheck_does_not_reverse_early_on_disturbed_rounds():
    """Two of the first EARLY_ROUNDS rounds have the choice's chunks disturbed (5x slower), the
    third not: the median says 1 thread leads clearly, but not every round agrees, so there is
    no early reversal; the undisturbed rounds that follow confirm 2 threads."""
    choice = _decided({2: 1.0, 1: 1.39})
    calm = {2: 1.0, 1: 1.39}
    _rounds(choice, {2: 5.0, 1: 1.39}, 2)
    _rounds(choice, calm, 1)
    assert choice.threads is None                      # not decided on a split vote
    while choice.threads is None:
        _rounds(choice, calm, 1)
    assert choice.threads == 2 and choice.decisions[-1][0] == 2
    assert len(choice.decisions) == 2 and choice.backoff == 2      # a confirmation


def test_recheck_reverses_early_when_every_round_agrees():
    choice = _decided({2: 1.0, 1: 1.39})
    _rounds(choice, {2: 5.0, 1: 1.39}, bt.EARLY_ROUNDS)  # another process took a core for good
    assert choice.threads == 1 and choice.decisions[-1] == (1, bt.EARLY_ROUNDS)


def _decided_under_load(slow):
    """A choice of 1 thread made while 2 threads ran ``slow`` times slower, due for its recheck."""
    choice = bt.ThreadChoice([2, 1])
    _rounds(choice, {2: slow, 1: 1.0}, bt.EARLY_ROUNDS)
    assert choice.threads == 1 and choice.decisions == [(1, bt.EARLY_ROUNDS)]
    choice.trained(choice.interval())
    assert choice.threads is None and choice.probing
    assert choice.guess() == 1          # before any round: the last choice, not tries[0]
    return choice


def test_recheck_under_lasting_load_confirms_on_one_probe_batch():
    choice = _decided_under_load(20.0)
    backoff = choice.backoff
    timed = _rounds(choice, {2: 20.0, 1: 1.0}, 1)
    assert timed == {2: bt.PROBE_CHUNK, 1: bt.CHUNK}    # not 3 rounds of MIN_CHUNK on 2 threads
    assert choice.threads == 1 and choice.decisions[-1] == (1, 1)
    assert choice.backoff == 2 * backoff and not choice.probing
    choice.trained(choice.interval())                   # the ratios still say: probe again
    assert choice.probing and choice.threads is None
    for _ in range(6):                                  # probes confirm; the interval stops growing
        _rounds(choice, {2: 20.0, 1: 1.0}, 1)
        assert choice.threads == 1
        choice.trained(choice.interval())
    assert choice.backoff == bt.PROBE_MAX_BACKOFF < bt.MAX_BACKOFF


def test_probe_that_finds_the_load_gone_leads_to_a_full_recheck():
    choice = _decided_under_load(20.0)
    quiet = {2: 1.0, 1: 1.39}
    _rounds(choice, quiet, 1)                           # the probe: 2 threads lead now
    assert choice.threads is None and not choice.probing and choice.rounds == []
    assert choice.chunk(2) == bt.MIN_CHUNK              # the recheck proper, as before
    while choice.threads is None:
        _rounds(choice, quiet, 1)
    assert choice.threads == 2 and choice.decisions[-1] == (2, bt.ROUNDS)


def test_probe_under_a_lead_between_margin_and_probe_lead_is_not_enough():
    choice = _decided_under_load(20.0)
    _rounds(choice, {2: 2.0, 1: 1.0}, 1)                # 1 thread leads, by 2x only
    assert choice.threads is None and not choice.probing
    timed = _rounds(choice, {2: 2.0, 1: 1.0}, bt.EARLY_ROUNDS)
    assert choice.threads == 1 and choice.decisions[-1] == (1, bt.EARLY_ROUNDS)
    assert timed == {2: bt.EARLY_ROUNDS * bt.MIN_CHUNK, 1: bt.EARLY_ROUNDS * bt.CHUNK}


def test_no_probe_where_the_loser_lost_by_less_than_probe_lead():
    choice = _decided({2: 1.0, 1: 1.39})
    assert not choice.probing and choice.chunk(1) == bt.MIN_CHUNK
