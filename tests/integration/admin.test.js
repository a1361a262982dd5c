'use strict';
// The admin listener: /healthz, /readyz (503 while draining), /cache/stats,
// DELETE /cache/{id} across every tenant, its errors; turned off with an
// empty admin_listen; a taken admin port refused with a clear message.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const bearer = (k) => ({ authorization: `Bearer ${k}` });

/* An admin request: no Authorization (the admin routes need none). */
function admin(px, p, opts = {}) {
	return h.request(px.adminUrl + p, { ...opts, headers: { authorization: null, ...(opts.headers || {}) } });
}

async function adminJSON(px, p, status = 200) {
	const r = await admin(px, p);
	assert.equal(r.status, status, `GET ${p}: ${r.body.slice(0, 300)}`);
	assert.match(r.headers['content-type'] || '', /^application\/json/, `GET ${p} content-type`);
	return r.json();
}

/* A whole HTTP exchange over one socket the server closes; the raw bytes. */
function rawExchange(port, text, timeoutMs = 5000) {
	return new Promise((resolve, reject) => {
		const s = net.connect(port, '127.0.0.1');
		const chunks = [];
		const t = setTimeout(() => { s.destroy(); reject(new Error(`no close within ${timeoutMs} ms`)); }, timeoutMs);
		s.on('data', (d) => chunks.push(d));
		s.on('error', (e) => { clearTimeout(t); reject(e); });
		s.on('close', () => { clearTimeout(t); resolve(Buffer.concat(chunks).toString('latin1')); });
		s.write(text);
	});
}

test('healthz and readyz answer 200 with their JSON; unknown paths 404; wrong methods 405 with Allow', async () => {
	await h.withStack({}, async ({ px }) => {
		assert.ok(px.adminUrl, `no "admin on" line: ${px.stderr()}`);
		assert.match(px.stderr(), /respcache: admin on 127\.0\.0\.1:\d+\nrespcache: listening on 127\.0\.0\.1:\d+\n/,
			'"admin on" is printed just before "listening on"');
		assert.deepEqual(await adminJSON(px, '/healthz'), { status: 'ok' });
		assert.deepEqual(await adminJSON(px, '/readyz'), { status: 'ready' });

		for (const p of ['/', '/nope', '/healthz/x', '/v1/responses', '/cache', '/metricsx']) {
			const r = await admin(px, p);
			const j = h.assertOpenAIError(r, 404, `GET ${p}`);
			assert.equal(j.error.code, 'unknown_route');
		}
		for (const [method, p, allow] of [
			['POST', '/healthz', 'GET, HEAD'], ['PUT', '/readyz', 'GET, HEAD'],
			['DELETE', '/metrics', 'GET, HEAD'], ['POST', '/cache/stats', 'GET, HEAD'],
			['DELETE', '/cache/stats', 'GET, HEAD'],
			['GET', '/cache/resp_abc', 'DELETE'], ['POST', '/cache/resp_abc', 'DELETE'],
		]) {
			const r = await admin(px, p, { method });
			const j = h.assertOpenAIError(r, 405, `${method} ${p}`);
			assert.equal(j.error.code, 'method_not_allowed');
			assert.equal(r.headers.allow, allow, `Allow of ${method} ${p}`);
		}
		// The client listener does not serve the admin routes.
		assert.equal((await h.request(`${px.url}/healthz`)).status, 404, 'no /healthz on the client port');
	});
});

test('HEAD on an admin route answers with headers only: no body after them', async () => {
	await h.withStack({}, async ({ px }) => {
		const port = Number(new URL(px.adminUrl).port);
		for (const p of ['/healthz', '/readyz', '/metrics', '/cache/stats']) {
			const raw = await rawExchange(port, `HEAD ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
			assert.match(raw, /^HTTP\/1\.1 200 /, `HEAD ${p}: ${JSON.stringify(raw.slice(0, 200))}`);
			const body = raw.slice(raw.indexOf('\r\n\r\n') + 4);
			assert.equal(body, '', `HEAD ${p} must not carry a body (RFC 9110 9.3.2), got ${body.length} bytes: ${JSON.stringify(body.slice(0, 80))}`);
		}
		// A keep-alive client that sends HEAD then GET must read two answers.
		const raw = await rawExchange(port, 'HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
			+ 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
		const answers = raw.split(/(?=HTTP\/1\.1 \d{3} )/);
		assert.equal(answers.length, 2, `two answers on one connection: ${JSON.stringify(raw)}`);
		assert.match(answers[1], /\r\n\r\n\{"status":"ready"\}\n$/, 'the GET after the HEAD gets its own body');
	});
});

test('/cache/stats: entries and bytes after a miss; hits, misses and hit_ratio after a hit', async () => {
	await h.withStack({ proxy: { config: '[cache]\nmax_size = 64m\n' } }, async ({ up, px }) => {
		const s0 = await adminJSON(px, '/cache/stats');
		for (const k of ['entries', 'bytes', 'max_size', 'map_size', 'map_used', 'map_used_ratio', 'hits', 'misses',
			'hit_ratio', 'evictions', 'map_full', 'errors']) {
			assert.equal(typeof s0[k], 'number', `${k} is a number in ${JSON.stringify(s0)}`);
		}
		assert.deepEqual(Object.keys(s0).sort(), ['bytes', 'entries', 'errors', 'evictions', 'hit_ratio', 'hits', 'map_full',
			'map_size', 'map_used', 'map_used_ratio', 'max_size', 'misses'], 'exactly the documented keys');
		assert.equal(s0.max_size, 64 * 1024 * 1024, 'max_size is [cache] max_size');
		assert.ok(s0.map_size >= s0.max_size, `map_size ${s0.map_size} holds max_size`);
		assert.ok(s0.map_used > 0 && s0.map_used <= s0.map_size);
		assert.ok(Math.abs(s0.map_used_ratio - s0.map_used / s0.map_size) < 1e-9, 'map_used_ratio = map_used / map_size');
		assert.equal(s0.entries, 0);
		assert.equal(s0.hits, 0);
		assert.equal(s0.misses, 0);
		assert.equal(s0.hit_ratio, 0);

		const id = up.seed();
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'MISS', 'first GET');
		const s1 = await adminJSON(px, '/cache/stats');
		assert.equal(s1.entries, 1, 'one entry after a miss');
		assert.ok(s1.bytes > s0.bytes, `bytes grew: ${s0.bytes} -> ${s1.bytes}`);
		assert.equal(s1.misses, 1);
		assert.equal(s1.hits, 0);
		assert.equal(s1.hit_ratio, 0);

		for (let i = 0; i < 3; i++) h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'HIT', `GET #${i + 2}`);
		const s2 = await adminJSON(px, '/cache/stats');
		assert.equal(s2.entries, 1, 'hits add no entry');
		assert.equal(s2.hits, 3);
		assert.equal(s2.misses, 1);
		assert.equal(s2.hit_ratio, 0.75);
		assert.equal(s2.evictions, 0);
		assert.equal(s2.errors, 0);

		// A second id: a second entry.
		h.assertXCache(await h.request(`${px.url}/v1/responses/${up.seed()}`), 'MISS', 'another id');
		const s3 = await adminJSON(px, '/cache/stats');
		assert.equal(s3.entries, 2);
		assert.equal(s3.misses, 2);
		assert.equal(s3.hit_ratio, 0.6);
	});
});

test('DELETE /cache/{id} purges the id in every tenant (plain, variant, input_items, tombstone); other ids stay', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const A = up.seed({ input: ['one', 'two'] });	/* purged */
		const B = up.seed();				/* stays */
		const C = up.seed();				/* deleted by a client: a tombstone */
		const one = bearer('sk-tenant-one');
		const two = bearer('sk-tenant-two');
		const get = (p, headers) => h.request(px.url + p, { headers });
		const inc = '?include[]=message.output_text.logprobs';

		// Tenant one: A plain, A with include, A's input_items, B.
		for (const p of [`/v1/responses/${A}`, `/v1/responses/${A}${inc}`, `/v1/responses/${A}/input_items`, `/v1/responses/${B}`]) {
			h.assertXCache(await get(p, one), 'MISS', `tenant one ${p}`);
			h.assertXCache(await get(p, one), 'HIT', `tenant one ${p} again`);
		}
		// Tenant two: A plain and B.
		for (const p of [`/v1/responses/${A}`, `/v1/responses/${B}`]) {
			h.assertXCache(await get(p, two), 'MISS', `tenant two ${p}`);
			h.assertXCache(await get(p, two), 'HIT', `tenant two ${p} again`);
		}
		// Tenant two deletes C through the proxy: a tombstone answers its GETs.
		assert.equal((await h.request(`${px.url}/v1/responses/${C}`, { method: 'DELETE', headers: two })).status, 200);
		h.assertXCache(await get(`/v1/responses/${C}`, two), 'HIT', 'the tombstone of C');
		const entries = (await adminJSON(px, '/cache/stats')).entries;

		const d = await admin(px, `/cache/${A}`, { method: 'DELETE' });
		assert.equal(d.status, 200, d.body);
		assert.match(d.headers['content-type'] || '', /^application\/json/);
		assert.deepEqual(d.json(), { id: A, purged: 4 }, 'tenant one\'s three entries of A and tenant two\'s one');
		assert.equal((await adminJSON(px, '/cache/stats')).entries, entries - 4, 'four entries fewer');

		// Every purged entry is fetched again, in both tenants...
		const gets = (p) => up.count('GET', p);
		const before = { a: gets(`/v1/responses/${A}`), ai: gets(`/v1/responses/${A}/input_items`), b: gets(`/v1/responses/${B}`) };
		const a1 = await get(`/v1/responses/${A}`, one);
		h.assertXCache(a1, 'MISS', 'tenant one A after the purge');
		assert.equal(a1.json().id, A);
		h.assertXCache(await get(`/v1/responses/${A}${inc}`, one), 'MISS', 'tenant one A variant after the purge');
		h.assertXCache(await get(`/v1/responses/${A}/input_items`, one), 'MISS', 'tenant one A input_items after the purge');
		h.assertXCache(await get(`/v1/responses/${A}`, two), 'MISS', 'tenant two A after the purge');
		assert.equal(gets(`/v1/responses/${A}`), before.a + 3, 'A plain (x2 tenants) and A variant went upstream');
		assert.equal(gets(`/v1/responses/${A}/input_items`), before.ai + 1, 'A input_items went upstream');
		// ...and another id is still a hit in both.
		h.assertXCache(await get(`/v1/responses/${B}`, one), 'HIT', 'tenant one B after purging A');
		h.assertXCache(await get(`/v1/responses/${B}`, two), 'HIT', 'tenant two B after purging A');
		assert.equal(gets(`/v1/responses/${B}`), before.b, 'B did not go upstream');

		// Purging C removes its tombstone: the next GET asks the upstream.
		const c0 = gets(`/v1/responses/${C}`);
		assert.deepEqual((await admin(px, `/cache/${C}`, { method: 'DELETE' })).json(), { id: C, purged: 1 });
		const c1 = await get(`/v1/responses/${C}`, two);
		h.assertOpenAIError(c1, 404, 'C after its tombstone was purged');
		assert.notEqual(c1.headers['x-cache'], 'HIT', 'the upstream answered, not a tombstone');
		assert.equal(gets(`/v1/responses/${C}`), c0 + 1);

		// An id nobody cached: nothing to purge.
		assert.deepEqual((await admin(px, '/cache/resp_never_seen', { method: 'DELETE' })).json(), { id: 'resp_never_seen', purged: 0 });
	});
});

test('DELETE /cache/{id} with a bad id: 400 in the OpenAI error shape, and nothing purged', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'MISS', 'prime');
		for (const bad of ['', 'resp%2Fx', 'resp.x', 'resp%20x', `${id}/input_items`, 'r'.repeat(129), 'resp_%C3%A9']) {
			const r = await admin(px, `/cache/${bad}`, { method: 'DELETE' });
			const j = h.assertOpenAIError(r, 400, `DELETE /cache/${bad}`);
			assert.equal(j.error.code, 'invalid_id');
			assert.equal(j.error.type, 'invalid_request_error');
		}
		assert.equal((await adminJSON(px, '/cache/stats')).entries, 1);
		h.assertXCache(await h.request(`${px.url}/v1/responses/${id}`), 'HIT', 'the entry survived the bad purges');
	});
});

test('/readyz goes 503 "draining" after SIGTERM while a stream is still open; the stream ends and the daemon exits 0', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url });
	let release;
	up.holdStream = new Promise((r) => { release = r; });
	try {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'drain me', stream: true },
		});
		await h.within(s.firstEvent, 5000, 'first event');
		assert.deepEqual(await adminJSON(px, '/readyz'), { status: 'ready' }, 'ready before the signal');
		let ended = false;
		s.done.then(() => { ended = true; }, () => { ended = true; });
		process.kill(px.pid, 'SIGTERM');
		const r = await h.until(async () => {
			const x = await admin(px, '/readyz', { agent: false });
			return x.status === 503 ? x : null;
		}, { timeoutMs: 5000, what: '/readyz to answer 503' });
		assert.deepEqual(r.json(), { status: 'draining' });
		assert.match(r.headers['content-type'] || '', /^application\/json/);
		assert.equal(ended, false, 'the stream is still open while /readyz says draining');
		assert.deepEqual(await adminJSON(px, '/healthz'), { status: 'ok' }, 'still alive while draining');
		assert.equal(px.proc.exitCode, null, 'still running while the stream is open');
		release();
		const { events } = await h.within(s.done, 5000, 'the stream to end');
		assert.equal(events.at(-1).event, 'response.completed', 'the drained stream was completed');
		await px.exitsCleanly(10000, 'exit after the drain');
	} finally {
		release();
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('admin_listen empty: no admin listener and no "admin on" line; the proxy serves', async () => {
	for (const opts of [{ admin: '' }, { admin: undefined, config: '[server]\nadmin_listen =\n' }]) {
		await h.withStack({ proxy: opts }, async ({ up, px }) => {
			assert.equal(px.adminUrl, null);
			assert.doesNotMatch(px.stderr(), /admin on/, `stderr: ${px.stderr()}`);
			const id = up.seed();
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`)).status, 200);
		});
	}
});

test('a taken admin port (or client port): exit non-zero with one clear line', async () => {
	const up = await h.startUpstream();
	const holder = net.createServer();
	await new Promise((r) => holder.listen(0, '127.0.0.1', r));
	const taken = holder.address().port;
	try {
		const free = await h.freePort();
		const base = ['--upstream', up.url, '--cache-dir', h.tmpdir()];
		const a = spawnSync(h.daemonPath(), [...base, '--listen', `127.0.0.1:${free}`, '--admin-listen', `127.0.0.1:${taken}`],
			{ encoding: 'utf8', timeout: 10000 });
		assert.equal(a.error, undefined);
		assert.notEqual(a.status, 0, 'a taken admin port is fatal');
		assert.match(a.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken} \\(\\[server\\] admin_listen; empty turns it off\\): the address is already in use\\n`));
		assert.equal(a.stderr.match(/cannot listen/g).length, 1, `one line: ${a.stderr}`);
		assert.doesNotMatch(a.stderr, /listening on|admin on/);

		const c = spawnSync(h.daemonPath(), [...base, '--listen', `127.0.0.1:${taken}`, '--admin-listen', ''],
			{ encoding: 'utf8', timeout: 10000 });
		assert.notEqual(c.status, 0, 'a taken client port is fatal');
		assert.match(c.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken} \\(\\[server\\] listen\\): the address is already in use\\n`));
		assert.doesNotMatch(c.stderr, /listening on|admin on/);
	} finally {
		await new Promise((r) => holder.close(r));
		await up.close();
	}
});
