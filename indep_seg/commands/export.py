"""`indep-seg export` (placeholder until its issue lands)."""


def add_arguments(parser):
    parser.add_argument("rest", nargs="*")


def run(args):
    raise NotImplementedError("'indep-seg export' is not implemented yet")
