"""ClickHouse for the Tinybird emulator: one chdb Session answering JSON lines.

The emulator spawns `python -u -c <this file>` and writes one request per line on stdin:
    {"query": "<SQL>"}
and reads one answer per line on stdout:
    {"ok": true, "meta": [{"name", "type"}], "rows": [{...}], "statistics": {...},
     "rows_before_limit_at_least": N (when ClickHouse gives it)}
    {"ok": false, "error": "<ClickHouse's message>"}
The first line it writes, before any request, says whether chdb could be loaded.
Queries that return nothing (CREATE, INSERT, DROP) answer {"ok": true, "meta": [], "rows": []}.
"""

import json
import os
import sys

# The answers go to a private copy of stdout; fd 1 is pointed at stderr so that nothing the
# native library prints can be mistaken for an answer.
answers = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
os.dup2(2, 1)


def answer(message):
    answers.write(json.dumps(message, ensure_ascii=False, default=str) + "\n")
    answers.flush()


try:
    import chdb
    from chdb import session as chdb_session

    database = chdb_session.Session(":memory:")
    # A remote table function in a filter (url(), s3()...) fails at once instead of retrying
    # with backoff for a minute, past the emulator's query timeout.
    database.query("SET http_max_tries = 1")
except Exception as error:  # noqa: BLE001 - any failure to load is reported, then we stop
    answer({"ok": False, "error": f"cannot load chdb with {sys.executable}: {error}"})
    sys.exit(1)

answer({"ok": True, "ready": f"chdb {chdb.__version__}"})

for line in sys.stdin:
    if not line.strip():
        continue
    try:
        query = json.loads(line)["query"]
        result = database.query(query, "JSON")
        text = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not text.strip():
            answer({"ok": True, "meta": [], "rows": []})
            continue
        parsed = json.loads(text)
        message = {
            "ok": True,
            "meta": parsed.get("meta", []),
            "rows": parsed.get("data", []),
            "statistics": parsed.get("statistics", {}),
        }
        if "rows_before_limit_at_least" in parsed:
            message["rows_before_limit_at_least"] = parsed["rows_before_limit_at_least"]
        answer(message)
    except Exception as error:  # noqa: BLE001 - every failure is the answer to this request
        answer({"ok": False, "error": str(error)})
