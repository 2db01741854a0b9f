"""Why each lost request was lost: where it was sent, and what that pod was
doing then. A total of lost requests moves with the machine's load; its
causes do not, so the report shows them and the tests assert them.

The causes, in the order they are tried (the first that holds is the one):
- no-endpoint: the client knew no ready endpoint to send it to;
- hung: sent to the replica whose loop a hang fault froze, while that loop
  was frozen (until its container ended);
- attacked: sent to the replica a hostile client was at, from the attack's
  start on, whichever of its containers got it (the client keeps attacking
  each new one: a replica busy with megabyte frames, its memory at the limit,
  is slow, and dies of it);
- going-away: sent to a pod being deleted, before (or while) its container
  stopped: the client had not heard yet that it was leaving;
- killed: its container died, not deleted, before it could answer (a crash,
  an OOM kill, a liveness kill), or it was sent while the container was down;
- not-listening: sent to a container that had not begun to answer yet (a
  pod listed before its server listens: no readiness probe);
- unexplained: none of these — nothing the stage did explains it.

Times: a sample's send time is on the load's clock (seconds since it
started); pod histories are on the backend's. `load_start` is when the
load's clock started, on the backend's clock.
"""

from collections import Counter

CAUSES = ("no-endpoint", "hung", "attacked", "going-away", "killed", "not-listening", "unexplained")


def first_answers(samples, load_start):
    """endpoint -> the backend-clock times its answers arrived, in order."""
    arrived = {}
    for sent, latency, endpoint in samples:
        if latency is not None:
            arrived.setdefault(endpoint, []).append(load_start + sent + latency)
    return {endpoint: sorted(times) for endpoint, times in arrived.items()}


def cause(sent_at, endpoint, pods, answers, timeout_s, struck=None):
    """The cause of one lost request sent at `sent_at` (backend clock);
    `struck`: (pod name, backend time, "hung" or "attacked") of the replica a
    fault or a hostile client struck."""
    if endpoint is None:
        return "no-endpoint"
    candidates = [p for p in pods if p.address == endpoint and p.created_at <= sent_at]
    if not candidates:
        return "unexplained"
    pod = max(candidates, key=lambda p: p.created_at)  # addresses can be used again
    deadline = sent_at + timeout_s
    run = pod.run_at(sent_at)
    if struck is not None and struck[0] == pod.name and sent_at >= struck[1]:
        if struck[2] == "attacked":
            return "attacked"
        frozen = pod.run_at(struck[1])
        if frozen is not None and (frozen.ended_at is None or sent_at < frozen.ended_at):
            return "hung"
    deleted = pod.deleted_at is not None and pod.deleted_at <= deadline
    if run is None:  # down: between two runs, or after the last
        if pod.deleted_at is not None and pod.deleted_at <= sent_at:
            return "going-away"
        return "killed" if pod.last_run_before(sent_at) else "not-listening"
    if run.ended_at is not None and run.ended_at <= deadline:
        return "going-away" if deleted and pod.deleted_at <= run.ended_at else "killed"
    if deleted:
        return "going-away"
    answered_after = [t for t in answers.get(endpoint, []) if t >= run.started_at]
    if not answered_after or deadline < answered_after[0]:
        return "not-listening"
    return "unexplained"


def lost_by_cause(samples, pods, load_start, timeout_s, struck=None):
    """{cause: how many lost} for the load's samples (sent at, latency or
    None, endpoint); `struck` as for cause()."""
    answers = first_answers(samples, load_start)
    counted = Counter(cause(load_start + sent, endpoint, pods, answers, timeout_s, struck)
                      for sent, latency, endpoint in samples if latency is None)
    return {name: counted[name] for name in CAUSES if counted[name]}
