"""`nats-bridge dry-run`: what would go wrong if this mapping file ran, found without running it.

The modules, in the order a dry-run goes:

* checks: the offline checks, all of them (the list of checks is its docstring); streams and
  routes hold them: where each route's subjects land, and routes against each other.
* report: findings by severity, the report, and its exit code (0 clean, 1 warnings, 2 errors).
* connect: `--connect`, each broker asked what is there, nothing changed (the brokers ask:
  bridge/brokers/*/probe.py); and the whole run.
* records, replay: `--input FILE.jsonl`, recorded messages replayed through the mapping.
* sample: `--sample N`, live traffic read without consuming (the brokers read it:
  bridge/brokers/*/sample.py), turned into replay records.
* output: the report for people.
"""
