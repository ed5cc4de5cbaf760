"""``bench/run.py --profile``'s summary of py-spy's collapsed stacks: per process, its busiest
thread of our code, and the share of that thread's samples under each frame of ours and under
the waits (PostgreSQL, the emulator)."""

from __future__ import annotations

from bench import profiling

BENCH = 'process 40:"python bench/run.py --profile --emulator localstack"'
CONSUMER = f'{BENCH};process 41:"python manage.py consume --service transfers --no-startup"'
RAW = "\n".join(
    [
        f"{CONSUMER};thread (41): MainThread;<module> (manage.py:15);"
        "Consumer.poll (events/consumer.py:443);Consumer.receive (events/consumer.py:400);"
        "_api_call (botocore/client.py:1);HTTPResponse.begin (http/client.py:331);readinto (socket.py:706) 60",
        f"{CONSUMER};thread (41): MainThread;<module> (manage.py:15);"
        "Consumer.poll (events/consumer.py:443);Consumer.transact (events/consumer.py:614);"
        "execute (psycopg/cursor.py:97);Connection.wait (psycopg/connection.py:495) 30",
        f"{CONSUMER};thread (41): MainThread;<module> (manage.py:15);"
        "Consumer.poll (events/consumer.py:445);Consumer.transact (events/consumer.py:620);"
        "Model.save (django/db/models/base.py:800) 10",
        # the heartbeat thread waits all along (more samples, all asleep): not the thread described
        f"{CONSUMER};thread (42): heartbeat;Thread.run (threading.py:982);"
        "Heartbeat._beat (events/consumer.py:236);Event.wait (threading.py:629);Condition.wait (threading.py:327) 150",
        # py-spy does not always show the wait: a heartbeat between beats can look busy
        f"{CONSUMER};thread (44): visibility-heartbeat;Thread.run (threading.py:982);"
        "Heartbeat._beat (events/consumer.py:237) 300",
        f'{BENCH};process 43:"python .venv/bin/moto_server -H 127.0.0.1 -p 5000";thread (43): MainThread;'
        "serve_forever (socketserver.py:233) 70",
        f"{BENCH};thread (40): MainThread;main (bench/run.py:140);write_overhead (bench/db_bench.py:50) 4",
    ]
)


def test_the_summary_describes_each_process_by_its_busiest_thread_of_our_code():
    text = profiling.summary(RAW)
    sections = {s.split(":")[0].split(",")[0]: s for s in text.split("== ")[1:]}
    consumer = sections["consume --service transfers [41]"]
    assert consumer.startswith("consume --service transfers [41], thread MainThread: 100 samples")
    assert "100.0%  Consumer.poll (events/consumer.py)" in consumer  # line numbers merged
    assert " 60.0%  [waiting on the emulator (HTTP)]" in consumer
    assert " 40.0%  Consumer.transact (events/consumer.py)" in consumer
    assert " 30.0%  [waiting on PostgreSQL]" in consumer
    assert "_beat" not in consumer
    assert sections["moto_server [43]"].startswith("moto_server [43]: 70 samples, no frame of our code")
    assert "100.0%  write_overhead (bench/db_bench.py)" in sections["bench/run.py [40]"]
