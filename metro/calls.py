"""The SQL of every call of a stored function, in one place.

Producers, the bridge, the loader's examples, the benchmarks and the demo send
these texts; none of them writes its own. Arguments are always parameters
(`%s`), never formatted into the text. A timestamp argument left NULL means
now() where the function's own default would apply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Call:
    """A function call: `sql` has one %s placeholder per argument. `decision` says the
    call returns (accepted, message); otherwise it returns nothing worth reading."""
    name: str
    sql: str
    decision: bool = True

    @property
    def numbered_sql(self) -> str:
        """The same text with $1, $2 ... as libpq's prepared statements want."""
        parts = self.sql.split("%s")
        return "".join(part + (f"${n}" if n < len(parts) else "")
                       for n, part in enumerate(parts, start=1))

    def pgbench(self, *variables: str) -> str:
        """The text as a pgbench script line, with :variables for the arguments."""
        parts = self.sql.split("%s")
        if len(variables) != len(parts) - 1:
            raise ValueError(f"{self.name} takes {len(parts) - 1} arguments")
        return "".join(part + (f":{variables[n]}" if n < len(variables) else "")
                       for n, part in enumerate(parts)) + ";\n"


VALIDATE_ENTRY = Call(
    "validate_entry", "SELECT accepted, message FROM metro.validate_entry("
    "%s::bigint, %s::integer, coalesce(%s::timestamptz, now()))")
VALIDATE_ENTRIES = Call(
    "validate_entries", "SELECT ordinal, accepted, message FROM metro.validate_entries("
    "%s::bigint[], %s::integer[], %s::timestamptz[])")
PROCESS_EXIT = Call(
    "process_exit", "SELECT accepted, message FROM metro.process_exit("
    "%s::bigint, %s::integer, coalesce(%s::timestamptz, now()))")
RECHARGE_CARD = Call(
    "recharge_card", "SELECT accepted, message FROM metro.recharge_card("
    "%s::bigint, %s::integer, %s::integer, coalesce(%s::timestamptz, now()))")
IS_FRAUD = Call(
    "is_fraud", "SELECT metro.is_fraud(%s::bigint, %s::integer,"
    " coalesce(%s::timestamptz, now()))", decision=False)
RECORD_TRAIN_EVENT = Call(
    "record_train_event", "SELECT metro.record_train_event("
    "%s::integer, %s::integer, %s::integer, coalesce(%s::timestamptz, now()))",
    decision=False)
# A blocked payment reads as not accepted, with the rule's reason as its message.
EVALUATE_TRANSACTION = Call(
    "evaluate_transaction", "SELECT NOT blocked, message FROM metro.evaluate_transaction("
    "%s::text, %s::text, %s::numeric, coalesce(%s::timestamptz, now()))")
EVALUATE_TRANSACTIONS = Call(
    "evaluate_transactions", "SELECT ordinal, NOT blocked, message FROM"
    " metro.evaluate_transactions(%s::text[], %s::text[], %s::numeric[], %s::timestamptz[])")
