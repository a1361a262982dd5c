'use strict';
// A damaged cache file never crashes the proxy nor serves a wrong body.
// Each case fills a cache through a real proxy, stops it, damages
// data.mdb the way a crash, a full disk or a bad sector would, and starts
// a proxy again on the same directory, in front of the same upstream.
// Then every GET answers the upstream's exact body: a damaged entry is a
// MISS fetched again, never a HIT with wrong bytes.  A file the proxy
// cannot trust makes it start empty, saying why in one log line.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');

const PAGE = 4096;
const N = 12;
const EMPTY_RE = /starting with an empty cache/g;

/* Fill a new cache dir with N responses (each GET twice: MISS, then HIT). */
async function fill(up) {
	const cacheDir = h.tmpdir();
	const px = await h.startProxy({ upstream: up.url, cacheDir });
	const items = [];
	try {
		for (let i = 0; i < N; i++) {
			const id = up.seed({ input: `question ${i}` });
			const g1 = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g1.status, 200, g1.body);
			h.assertXCache(g1, 'MISS', `first GET of ${id}`);
			const g2 = await h.request(`${px.url}/v1/responses/${id}`);
			h.assertXCache(g2, 'HIT', `second GET of ${id}`);
			assert.equal(g2.body, g1.body);
			items.push({ id, body: g1.body, reqId: g1.headers['x-request-id'] });
		}
	} finally {
		await px.stop();
	}
	return { cacheDir, items };
}

function dataFile(cacheDir) {
	return path.join(cacheDir, 'data.mdb');
}

/* Every offset in buf at which needle starts. */
function findAll(buf, needle) {
	const at = [];
	for (let i = buf.indexOf(needle); i !== -1; i = buf.indexOf(needle, i + 1)) at.push(i);
	return at;
}

/* Change one byte at each place text is found in data.mdb (every copy). */
function flipIn(cacheDir, text, offsetInText) {
	const f = dataFile(cacheDir);
	const buf = fs.readFileSync(f);
	const at = findAll(buf, Buffer.from(text));
	assert.ok(at.length > 0, `"${text}" is in data.mdb`);
	for (const i of at) buf[i + offsetInText] ^= 0x01;
	fs.writeFileSync(f, buf);
	return at;
}

/*
 * Start a proxy on the damaged dir, GET every item: each answers the
 * upstream's exact body, and those in damaged are MISSes.  Returns the
 * proxy's stderr and the X-Cache of each.
 */
async function readBack(up, cacheDir, items, damaged = new Set()) {
	const px = await h.startProxy({ upstream: up.url, cacheDir });
	const xcache = {};
	let stats;
	try {
		for (const it of items) {
			const g = await h.request(`${px.url}/v1/responses/${it.id}`);
			assert.equal(g.status, 200, g.body);
			assert.equal(g.body, it.body, `the body of ${it.id} is the upstream's`);
			xcache[it.id] = g.headers['x-cache'];
			if (damaged.has(it.id)) h.assertXCache(g, 'MISS', `the damaged ${it.id}`);
			/* Fetched again, it is stored whole and served as a HIT. */
			const g2 = await h.request(`${px.url}/v1/responses/${it.id}`);
			assert.equal(g2.body, it.body, `the body of ${it.id}, again`);
			h.assertXCache(g2, 'HIT', `${it.id} once more`);
		}
		const s = await h.request(`${px.adminUrl}/cache/stats`);
		stats = JSON.parse(s.body);
	} finally {
		await px.stop();	// asserts exit 0 and no sanitizer report
	}
	return { stderr: px.stderr(), xcache, stats };
}

/* It started empty, said so once, and why; every entry was a MISS. */
function assertStartedEmpty(r, items, why) {
	const lines = r.stderr.match(EMPTY_RE) || [];
	assert.equal(lines.length, 1, `one "starting with an empty cache" line:\n${r.stderr}`);
	assert.match(r.stderr, why);
	for (const it of items) assert.equal(r.xcache[it.id], 'MISS', `${it.id} after an empty start`);
}

function assertKept(r, items, damaged) {
	assert.doesNotMatch(r.stderr, EMPTY_RE, 'the cache was kept');
	for (const it of items) {
		if (!damaged.has(it.id)) assert.equal(r.xcache[it.id], 'HIT', `undamaged ${it.id}`);
	}
}

let up;
test.before(async () => { up = await h.startUpstream(); });
test.after(async () => { await up.close(); });

for (const [what, size] of [
	['to half its size', (n) => Math.floor(n / 2 / PAGE) * PAGE],
	['to half its size, mid-page', (n) => Math.floor(n / 2) + 123],
	['to one page', () => PAGE],
	['to a page and a half', () => PAGE + PAGE / 2],
	['to zero bytes', () => 0],
]) {
	test(`data.mdb truncated ${what}: starts empty, says why`, async () => {
		const { cacheDir, items } = await fill(up);
		const f = dataFile(cacheDir);
		fs.truncateSync(f, size(fs.statSync(f).size));
		const r = await readBack(up, cacheDir, items);
		assertStartedEmpty(r, items, /cut short|too short|not an LMDB file|MDB_INVALID/);
	});
}

test('meta pages zeroed: starts empty, says why', async () => {
	for (const pages of [[0, 1], [0], [1]]) {
		const { cacheDir, items } = await fill(up);
		const fd = fs.openSync(dataFile(cacheDir), 'r+');
		for (const p of pages) fs.writeSync(fd, Buffer.alloc(PAGE), 0, PAGE, p * PAGE);
		fs.closeSync(fd);
		const r = await readBack(up, cacheDir, items);
		assertStartedEmpty(r, items, /MDB_INVALID|not an LMDB file/);
	}
});

test('garbage over the pages of a stored body: starts empty, says why', async () => {
	const { cacheDir, items } = await fill(up);
	const f = dataFile(cacheDir);
	const buf = fs.readFileSync(f);
	const at = findAll(buf, Buffer.from(`"id":"${items[3].id}"`));
	assert.ok(at.length > 0);
	const page = Math.floor(at[0] / PAGE);
	crypto.randomFillSync(buf, page * PAGE, PAGE);
	fs.writeFileSync(f, buf);
	const r = await readBack(up, cacheDir, items);
	assertStartedEmpty(r, items, /damaged|not the leaf|MDB_|killed|LMDB/);
});

test('garbage over the leaf pages that hold the keys: starts empty', async () => {
	const { cacheDir, items } = await fill(up);
	const f = dataFile(cacheDir);
	const buf = fs.readFileSync(f);
	/* Every page holding a key of this id, live or a stale copy. */
	const pages = new Set(findAll(buf, Buffer.from(`\0r\0${items[5].id}\0`)).map((i) => Math.floor(i / PAGE)));
	assert.ok(pages.size > 0);
	for (const p of pages) crypto.randomFillSync(buf, p * PAGE, PAGE);
	fs.writeFileSync(f, buf);
	const r = await readBack(up, cacheDir, items);
	assertStartedEmpty(r, items, /./);
});

test('garbage over pages in the middle of the file: no crash, exact bodies', async () => {
	for (const seed of [0, 1, 2, 3]) {
		const { cacheDir, items } = await fill(up);
		const f = dataFile(cacheDir);
		const buf = fs.readFileSync(f);
		const npages = Math.floor(buf.length / PAGE);
		/* Pages 2.. of the file, in turn; whatever they hold. */
		const page = 2 + ((Math.floor(npages / 2) + seed * 3) % (npages - 2));
		crypto.randomFillSync(buf, page * PAGE, PAGE);
		fs.writeFileSync(f, buf);
		const r = await readBack(up, cacheDir, items);
		const lines = r.stderr.match(EMPTY_RE) || [];
		assert.ok(lines.length <= 1, `at most one "starting with an empty cache" line:\n${r.stderr}`);
	}
});

test('one flipped byte in a stored body: that entry is a MISS, the rest HIT', async () => {
	const { cacheDir, items } = await fill(up);
	const victim = items[4];
	const at = flipIn(cacheDir, `"id":"${victim.id}"`, 8);
	assert.equal(at.length, 1, 'the body is stored once');
	const r = await readBack(up, cacheDir, items, new Set([victim.id]));
	assertKept(r, items, new Set([victim.id]));
	assert.match(r.stderr, /1 entries fail their checksum/);
	assert.match(r.stderr, /an entry failed its checksum and was dropped/);
	assert.ok(r.stats.errors >= 1, `cache errors counted: ${JSON.stringify(r.stats)}`);
});

test('flipped bytes in two bodies and in the last byte of one', async () => {
	const { cacheDir, items } = await fill(up);
	const damaged = new Set([items[0].id, items[N - 1].id, items[7].id]);
	flipIn(cacheDir, `"id":"${items[0].id}"`, 12);
	flipIn(cacheDir, `"id":"${items[N - 1].id}"`, 6);
	/* The body's last byte: its closing brace, right before the next value or page end. */
	const f = dataFile(cacheDir);
	const buf = fs.readFileSync(f);
	const start = findAll(buf, Buffer.from(`"id":"${items[7].id}"`))[0];
	const end = buf.indexOf(Buffer.from(items[7].body.slice(-20)), start) + 19;
	assert.equal(buf[end], items[7].body.charCodeAt(items[7].body.length - 1));
	buf[end] ^= 0x20;
	fs.writeFileSync(f, buf);
	const r = await readBack(up, cacheDir, items, damaged);
	assertKept(r, items, damaged);
	assert.ok(r.stats.errors >= 3, `cache errors counted: ${JSON.stringify(r.stats)}`);
});

test('one flipped byte in a stored header: that entry is a MISS, the rest HIT', async () => {
	const { cacheDir, items } = await fill(up);
	const victim = items[2];
	assert.ok(victim.reqId, 'the upstream sent x-request-id');
	/* The stored x-request-id line, ended by CRLF so req_1 is not req_10. */
	flipIn(cacheDir, `${victim.reqId}\r\n`, victim.reqId.length - 1);
	const r = await readBack(up, cacheDir, items, new Set([victim.id]));
	assertKept(r, items, new Set([victim.id]));
});

test('an undamaged cache is kept whole across restarts', async () => {
	const { cacheDir, items } = await fill(up);
	const r = await readBack(up, cacheDir, items);
	assertKept(r, items, new Set());
	assert.equal(r.stats.errors, 0);
	const r2 = await readBack(up, cacheDir, items);
	assertKept(r2, items, new Set());
});
