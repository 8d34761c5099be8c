"""The default executor: one group after another, in this process, with live progress."""

from lmbench.api import Executor, Summary


class Local(Executor):
    def run(self, job, groups, tracker):
        summary = Summary()
        for group in groups:
            done = job(group, tracker.started(group))
            tracker.finished(group, done)
            summary.add(done)
        return summary
