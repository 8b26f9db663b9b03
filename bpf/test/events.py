# Checks egressd NDJSON. Usage: events.py FILE TYPE [key=value]... [contains=TEXT] [cover=N]
# Exit 0 when some event of TYPE matches every key=value (compared as text) and, with contains=,
# the decoded data of the matching events (concatenated) holds TEXT; with cover=, the distinct
# (offset, cap) chunks of the matching events add up to N bytes. Prints the match count.
import base64, json, sys

path, typ, *conds = sys.argv[1:]
want = dict(c.split('=', 1) for c in conds)
needle = want.pop('contains', None)
cover = want.pop('cover', None)
hits, data, chunks = 0, b'', set()
for line in open(path, encoding='utf-8', errors='replace'):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get('type') != typ or any(str(e.get(k)) != v for k, v in want.items()):
        continue
    hits += 1
    data += base64.b64decode(e.get('data_b64') or '')
    chunks.add((e.get('offset'), e.get('cap')))
ok = hits > 0 and (needle is None or needle.encode().decode('unicode_escape').encode('latin1') in data)
if cover is not None:
    ok = ok and sum(c for _, c in chunks) == int(cover)
print(hits)
sys.exit(0 if ok else 1)
