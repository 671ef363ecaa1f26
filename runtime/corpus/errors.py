"""The corpus job's exception: bad input or a job state it cannot act on, said in one sentence."""


class CorpusError(ValueError):
    """An input, output or job-state problem, naming the file (and line) at fault."""
