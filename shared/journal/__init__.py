"""The exchange journal: every OICP request and answer of the node, hash-chained (README, Exchange journal).

* :mod:`shared.journal.entry` — what an entry holds, its canonical form, the chain and its verification;
* :mod:`shared.journal.recorder` — the producers' side: never blocks or fails an OICP answer;
* :mod:`shared.journal.store` — Redis: the raw stream, the sealer (one writer, under a lease), search,
  verification, retention, export;
* :mod:`shared.journal.signing` — Ed25519 keys and the detached signature of an exported bundle.
"""
