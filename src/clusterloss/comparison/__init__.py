"""The fair loss comparison: protocol files, tuning on validation classes, final seeds, statistics, reports.

``spec`` reads a protocol, ``protocol`` runs it (``clusterloss compare --protocol FILE``), ``runs`` makes one
run once, ``stats`` and ``report`` summarize, ``features`` trains embedding heads on cached backbone features.
"""
