"""A sqlite3 connection with an open transaction: no pickler can save a connection."""

SETUP = """
import sqlite3
s05_db = sqlite3.connect(":memory:")
s05_db.execute("create table t (k integer primary key, v text)")
s05_db.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(100)])
s05_db.commit()
s05_db.execute("update t set v = 'changed' where k < 10")  # transaction left open
"""
FINGERPRINT = (
    "(s05_db.in_transaction, s05_db.execute(\"select count(*) from t where v = 'changed'\").fetchone(), "
    "s05_db.execute('select count(*) from t').fetchone())"
)
MUTATE = "s05_db.rollback(); s05_db.execute('delete from t where k > 50'); s05_db.commit()"
