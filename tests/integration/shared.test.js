'use strict';
// The shared tier ([shared] redis): nodes with their own caches behind one
// real redis-server. What one node fetched, another serves without the
// upstream; a DELETE through one node leaves nothing in Redis for the others;
// Redis gone, hung or refusing the password is no outage; the password is
// never shown.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('../lib/harness');
const { startRedis, MISSING } = require('../lib/redis');

const skip = MISSING ? `skipped: ${MISSING}` : false;

function sharedConf(redis, extra = '') {
	// Generous: a sanitizer build on a busy CI core is slow to answer.
	return `[shared]\nredis = ${redis.url}\ntimeout = 500ms\n${extra}`;
}

/* Nodes (proxies) in front of one upstream, all stopped at the end. */
async function withFleet(redis, n, fn, { extra = '', upstream = {} } = {}) {
	const up = await h.startUpstream(upstream);
	const nodes = [];
	let err = null;
	try {
		for (let i = 0; i < n; i++) {
			const x = typeof extra === 'function' ? extra(i) : extra;
			nodes.push(await h.startProxy({ upstream: up.url, config: sharedConf(redis, x) }));
		}
		for (const px of nodes) {
			await h.until(async () => await h.metric(px, 'respcache_shared_up') === 1,
				{ timeoutMs: 10000, what: 'the node connected to Redis' });
		}
		await fn({ up, nodes });
	} catch (e) {
		if (process.env.FLEETDEBUG) console.log('# fleet error:', e.message);
		err = e;
	}
	for (const px of nodes) {
		try {
			await px.stop();
		} catch (e) {
			if (!err) err = e;
		}
	}
	await up.close();
	if (err) throw err;
}

/* A redis-server for the test, always stopped. */
async function withRedis(fn, opts) {
	const redis = await startRedis(opts);
	try {
		await fn(redis);
	} finally {
		await redis.stop();
	}
}

/* Every tenant's entries of id in Redis (the hash's fields). */
function entriesOf(redis, id) {
	return redis.cli('HLEN', `respcache:r:${id}`).then(Number);
}

test('a response fetched through node A is served by node B without the upstream', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed({ input: 'shared between nodes' });
			const p = `/v1/responses/${id}`;
			const r1 = await h.request(a.url + p);
			assert.equal(r1.status, 200, r1.body);
			h.assertXCache(r1, 'MISS', 'node A fetches it');
			// A's store reaches Redis after its answer: wait for it, not for time.
			await h.until(async () => await entriesOf(redis, id) === 1, { what: "A's entry in Redis" });

			const r2 = await h.request(b.url + p);
			assert.equal(r2.status, 200, r2.body);
			h.assertXCache(r2, 'HIT', 'node B has it from the shared tier');
			assert.equal(r2.body, r1.body, 'the same body');
			assert.equal(r2.headers.etag, r1.headers.etag, 'the same ETag');
			assert.match(r2.headers['content-type'], /^application\/json/);
			assert.match(r2.headers.age, /^\d+$/);
			assert.equal(up.count('GET', p), 1, 'one upstream GET for the whole fleet');
			assert.equal(await h.metric(b, 'respcache_shared_lookups_total', '{result="hit"}'), 1);
			assert.equal(await h.metric(b, 'respcache_requests_total',
				'{route="response",method="GET",status="2xx",cache="shared"}'), 1);

			// B kept it: its next GET is a local hit, no lookup in Redis.
			const r3 = await h.request(b.url + p);
			h.assertXCache(r3, 'HIT', "node B's own cache");
			assert.equal(r3.body, r1.body);
			assert.equal(await h.metric(b, 'respcache_shared_lookups_total', '{result="hit"}'), 1,
				'the second GET did not ask Redis');
			assert.equal(up.count('GET', p), 1);

			// A conditional GET through B matches the shared ETag.
			const r4 = await h.request(b.url + p, { headers: { 'if-none-match': r1.headers.etag } });
			assert.equal(r4.status, 304);
		});
	});
});

test('a response created through node A is retrieved through node B with no upstream GET', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const c = await h.request(`${a.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'made on A' } });
			assert.equal(c.status, 200, c.body);
			const id = c.json().id;
			await h.until(async () => await entriesOf(redis, id) === 1, { what: "the create's entry in Redis" });
			const g = await h.request(`${b.url}/v1/responses/${id}`);
			assert.equal(g.status, 200, g.body);
			h.assertXCache(g, 'HIT', 'from the shared tier');
			assert.equal(g.json().id, id);
			assert.equal(up.count('GET', `/v1/responses/${id}`), 0, 'no upstream GET at all');
		});
	});
});

test('a DELETE through node A leaves nothing in Redis, and node B answers 404', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			assert.equal((await h.request(a.url + p)).status, 200);
			await h.until(async () => await entriesOf(redis, id) === 1, { what: "A's entry in Redis" });
			const d = await h.request(a.url + p, { method: 'DELETE' });
			assert.equal(d.status, 200, d.body);
			assert.equal(await entriesOf(redis, id), 0, 'its entries are gone from Redis when the DELETE is answered');
			assert.equal(await redis.cli('EXISTS', `respcache:d:${id}`), '1', 'and the id is marked deleted');
			const ttl = Number(await redis.cli('PTTL', `respcache:d:${id}`));
			assert.ok(ttl > 0, `the mark expires (PTTL ${ttl})`);

			// B's 404: its tombstone, if it has read A's DELETE from the
			// fleet's stream by now, or the upstream's; never Redis's copy.
			const g = await h.request(b.url + p);
			h.assertOpenAIError(g, 404, 'B after the DELETE');
		});
	});
});

test('an answer node B fetched before a DELETE through node A never lands in Redis after it', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const before = JSON.stringify(up.responseObject(up.get(id)));
			const held = h.holdGets(up);
			// B misses, Redis has nothing, B's upstream GET is held.
			const pending = h.request(b.url + p);
			await h.until(() => held.length === 1, { what: "B's upstream GET" });
			const d = await h.request(a.url + p, { method: 'DELETE' });
			assert.equal(d.status, 200, d.body);
			// The upstream now answers B's GET with what it had before.
			held[0].res.writeHead(200, { 'content-type': 'application/json' });
			held[0].res.end(before);
			const r = await pending;
			assert.equal(r.status, 200, 'B answers its client what it fetched');
			// B either never stores it (it has read A's DELETE from the
			// stream) or Redis refuses the store (the id is marked). A later
			// store on B's one connection to Redis is the barrier: once it
			// is there, whatever B sent before it has been applied.
			up.override = null;
			const other = up.seed();
			assert.equal((await h.request(`${b.url}/v1/responses/${other}`)).status, 200);
			await h.until(async () => await entriesOf(redis, other) === 1, { what: "B's later store" });
			assert.equal(await entriesOf(redis, id), 0, 'nothing of the id in Redis');
			assert.equal(await h.metric(b, 'respcache_shared_stores_total', '{result="stored"}'), 1,
				'the later store only');
			// Nor does B serve it from its own cache.
			const again = await h.request(b.url + p);
			h.assertOpenAIError(again, 404, 'B after the DELETE');
		}, { extra: (i) => (i === 1 ? '[server]\nworkers = 1\n' : '') });
	});
});

test('Redis gone is no outage: hits stay local, misses go upstream, and the node reconnects', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 1, async ({ up, nodes: [a] }) => {
			const kept = up.seed();
			assert.equal((await h.request(`${a.url}/v1/responses/${kept}`)).status, 200);
			await redis.kill();
			await h.until(async () => await h.metric(a, 'respcache_shared_up') === 0,
				{ what: 'the node to see Redis gone' });

			const rz = await h.request(`${a.adminUrl}/readyz`, { headers: { authorization: null } });
			assert.equal(rz.status, 200, 'still ready without Redis');
			assert.deepEqual(rz.json(), { status: 'ready', shared: { redis: 'down', connections_up: 0,
				connections: rz.json().shared.connections } });
			assert.ok(rz.json().shared.connections >= 1);

			const hit = await h.request(`${a.url}/v1/responses/${kept}`);
			assert.equal(hit.status, 200);
			h.assertXCache(hit, 'HIT', 'its own cache still serves');
			const fresh = up.seed();
			const miss = await h.request(`${a.url}/v1/responses/${fresh}`);
			assert.equal(miss.status, 200, miss.body);
			h.assertXCache(miss, 'MISS', 'a miss goes upstream');
			assert.match(a.stderr(), /shared tier: lost Redis at 127\.0\.0\.1:\d+/);

			await redis.start();
			await h.until(async () => await h.metric(a, 'respcache_shared_up') === 1,
				{ timeoutMs: 15000, what: 'the node to reconnect' });
			const rz2 = (await h.request(`${a.adminUrl}/readyz`, { headers: { authorization: null } })).json();
			assert.equal(rz2.shared.redis, 'up');
			assert.equal(rz2.shared.connections_up, rz2.shared.connections);
			const again = up.seed();
			assert.equal((await h.request(`${a.url}/v1/responses/${again}`)).status, 200);
			await h.until(async () => await entriesOf(redis, again) === 1, { what: 'a store after the reconnect' });
		});
	});
});

test('a Redis that does not answer within [shared] timeout: the GET goes upstream', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 1, async ({ up, nodes: [a] }) => {
			process.kill(redis.pid, 'SIGSTOP');
			try {
				const id = up.seed();
				const t0 = Date.now();
				const r = await h.request(`${a.url}/v1/responses/${id}`);
				assert.equal(r.status, 200, r.body);
				h.assertXCache(r, 'MISS');
				assert.equal(up.count('GET', `/v1/responses/${id}`), 1);
				assert.ok(Date.now() - t0 < 5000, `answered in ${Date.now() - t0} ms`);
				assert.equal(await h.metric(a, 'respcache_shared_lookups_total', '{result="timeout"}'), 1);
			} finally {
				process.kill(redis.pid, 'SIGCONT');
			}
		}, { extra: '' });
	});
});

test('the password comes from password_file, and is never shown', { skip }, async () => {
	const password = `pw-${crypto.randomBytes(8).toString('hex')}-secret`;
	const redis = await startRedis({ password });
	const dir = h.tmpdir();
	const good = path.join(dir, 'redis-password');
	const bad = path.join(dir, 'wrong-password');
	const wrong = 'wrong-password-shown-nowhere';
	fs.writeFileSync(good, `${password}\n`, { mode: 0o600 });
	fs.writeFileSync(bad, `${wrong}\n`, { mode: 0o600 });
	try {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			assert.equal((await h.request(`${a.url}/v1/responses/${id}`)).status, 200);
			await h.until(async () => await entriesOf(redis, id) === 1, { what: 'the entry in Redis' });
			h.assertXCache(await h.request(`${b.url}/v1/responses/${id}`), 'HIT', 'B through an authenticated connection');

			// A node with the wrong password: refused, logged, and it still serves.
			const c = await h.startProxy({ upstream: up.url, config: sharedConf(redis, `password_file = ${bad}\n`) });
			try {
				await h.until(() => /Redis refused the connection's set-up/.test(c.stderr()),
					{ what: "the node's log of the refusal" });
				assert.equal(await h.metric(c, 'respcache_shared_up'), 0);
				const r = await h.request(`${c.url}/v1/responses/${id}`);
				assert.equal(r.status, 200);
				h.assertXCache(r, 'MISS', 'served from the upstream');
				const metrics = (await h.request(`${c.adminUrl}/metrics`, { headers: { authorization: null } })).body;
				for (const [what, text] of [['stderr of A', a.stderr()], ['stderr of B', b.stderr()],
					['stderr of C', c.stderr()], ['metrics of C', metrics]]) {
					assert.ok(!text.includes(password), `the password is not in ${what}`);
					assert.ok(!text.includes(wrong), `the wrong password is not in ${what}`);
				}
			} finally {
				await c.stop();
			}
		}, { extra: `password_file = ${good}\n` });
	} finally {
		await redis.stop();
	}
});

test('[shared] redis with a password in the URL, or a bad URL, refuses to start', { skip: false }, async () => {
	for (const url of ['redis://:hunter2@127.0.0.1:6379', 'rediss://:hunter2@127.0.0.1:6380',
		'redis://127.0.0.1:hunter2', 'unix:']) {
		await assert.rejects(h.startProxy({ upstream: 'http://127.0.0.1:1', config: `[shared]\nredis = ${url}\n` }),
			(e) => /\[shared\] redis/.test(e.message) && !e.message.split('--- stderr ---')[1].includes('hunter2'),
			url);
	}
});

/*
 * GET p through px until it is not a 200; the send time (ms, Date.now())
 * of the last 200, or null if the first answer already was not.
 */
async function lastServed(px, p, limitMs = 5000) {
	let last = null;
	const end = Date.now() + limitMs;
	for (;;) {
		const sent = Date.now();
		const r = await h.request(px.url + p);
		if (r.status !== 200) return { last, status: r.status };
		last = sent;
		if (Date.now() > end) return { last, status: 200 };
	}
}

test('a DELETE through node A: nodes B and C stop serving the id within 100 ms (worst of 100 deletes)', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 3, async ({ up, nodes: [a, b, c] }) => {
			const N = Number(process.env.LAGN || 100);
			let worst = 0;
			for (let i = 0; i < N; i++) {
				const id = up.seed();
				const p = `/v1/responses/${id}`;
				// Every node holds it in its own cache first.
				for (const px of [a, b, c]) {
					assert.equal((await h.request(px.url + p)).status, 200);
					h.assertXCache(await h.request(px.url + p), 'HIT', `delete ${i}: cached`);
				}
				const d = await h.request(a.url + p, { method: 'DELETE' });
				assert.equal(d.status, 200, d.body);
				const t0 = Date.now();
				for (const px of [b, c]) {
					const { last, status } = await lastServed(px, p);
					assert.equal(status, 404, `delete ${i}: at last a 404`);
					if (last !== null) worst = Math.max(worst, last - t0);
					if (process.env.LAGDEBUG && last !== null) console.log(`# ${i} ${px === b ? 'B' : 'C'} gap ${last - t0}`);
				}
			}
			console.log(`# worst gap over ${N} deletes: a GET sent ${worst} ms after the DELETE returned was still served`);
			assert.ok(worst < 100, `worst gap ${worst} ms`);
		});
	});
});

test('Redis down: a DELETE through A stops B serving the id within max_stale; B catches up when Redis is back', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			for (const px of [a, b]) {
				assert.equal((await h.request(px.url + p)).status, 200);
				h.assertXCache(await h.request(px.url + p), 'HIT');
			}
			await redis.kill();
			const tKill = Date.now();
			const d = await h.request(a.url + p, { method: 'DELETE' });
			assert.equal(d.status, 200, d.body);
			// B may serve its copy for max_stale (1 s here), then asks the upstream.
			const { last, status } = await lastServed(b, p, 10000);
			assert.equal(status, 404, 'B ends with the upstream\'s 404');
			assert.ok(last === null || last - tKill < 1000 + 300,
				`B served it ${last - tKill} ms after Redis went (max_stale 1 s)`);
			await h.until(() => /not caught up with the fleet's deletes for 1 s/.test(b.stderr()),
				{ what: "B's line about max_stale" });

			// Back: A tells what waited, B follows and serves its own cache again.
			await redis.start();
			await h.until(() => /caught up with the fleet's deletes; serving from the local cache/
				.test(b.stderr().split("not caught up")[1] || ''), { timeoutMs: 15000, what: 'B to catch up' });
			const other = up.seed();
			assert.equal((await h.request(`${b.url}/v1/responses/${other}`)).status, 200);
			h.assertXCache(await h.request(`${b.url}/v1/responses/${other}`), 'HIT', "B's own cache serves again");
			h.assertOpenAIError(await h.request(b.url + p), 404, 'and the deleted id stays deleted');
			await h.until(async () => Number(await redis.cli('XLEN', 'respcache:invalidations')) >= 2,
				{ what: "A's DELETE, told once Redis was back" });
		}, { extra: 'max_stale = 1s\n' });
	});
});

test('a node that comes back after the stream was trimmed past it empties its cache first', { skip }, async () => {
	const redis = await startRedis();
	const up = await h.startUpstream();
	const dir = h.tmpdir();
	try {
		const conf = sharedConf(redis);
		let b = await h.startProxy({ upstream: up.url, config: conf, cacheDir: dir });
		const a = await h.startProxy({ upstream: up.url, config: conf });
		try {
			await h.until(async () => await h.metric(b, 'respcache_shared_up') === 1, { what: 'B up' });
			const kept = up.seed();
			assert.equal((await h.request(`${b.url}/v1/responses/${kept}`)).status, 200);
			await h.until(() => /serving from the local cache/.test(b.stderr()), { what: 'B caught up' });
			await b.stop();
			// While B is away: deletes, and the stream trimmed to nothing.
			for (let i = 0; i < 3; i++) {
				const id = up.seed();
				assert.equal((await h.request(`${a.url}/v1/responses/${id}`)).status, 200);
				assert.equal((await h.request(`${a.url}/v1/responses/${id}`, { method: 'DELETE' })).status, 200);
			}
			await h.until(async () => Number(await redis.cli('XLEN', 'respcache:invalidations')) >= 6,
				{ what: "A's deletes in the stream" });
			await redis.cli('XTRIM', 'respcache:invalidations', 'MAXLEN', '0');
			b = await h.startProxy({ upstream: up.url, config: conf, cacheDir: dir });
			await h.until(() => /deletes this node had not read were trimmed from the fleet's stream; emptying the local cache/
				.test(b.stderr()), { what: "B's line about the trimmed stream" });
			await h.until(() => /serving from the local cache/.test(b.stderr()), { what: 'B caught up again' });
			const stats = (await h.request(`${b.adminUrl}/cache/stats`, { headers: { authorization: null } })).json();
			assert.equal(stats.entries, 0, 'B emptied its cache');
		} finally {
			await a.stop();
			await b.stop();
		}
	} finally {
		await up.close();
		await redis.stop();
	}
});

test('30 concurrent GETs of one uncached id spread over three nodes make one upstream request', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 3, async ({ up, nodes }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const held = h.holdGets(up);
			const gets = [];
			// agent: false: a connection each (the shared agent holds 8 a host).
			for (let i = 0; i < 30; i++) gets.push(h.request(nodes[i % 3].url + p, { agent: false }));
			// All 30 in the fleet's hands, one of them upstream.
			await h.until(async () => {
				let n = 0;
				for (const px of nodes) n += await h.metric(px, 'respcache_inflight_requests');
				return n === 30 && held.length === 1;
			}, { what: '30 requests in flight, one upstream GET held' });
			let waited = 0;
			for (const px of nodes) waited += await h.metric(px, 'respcache_shared_lookups_total', '{result="waited"}');
			assert.equal(waited, 2, 'the two other nodes wait on the fetch of the one holding the lease');
			up.override = null;
			held[0].res.writeHead(200, { 'content-type': 'application/json' });
			held[0].res.end(JSON.stringify(up.responseObject(up.get(id))));
			const answers = await Promise.all(gets);
			for (const r of answers) {
				assert.equal(r.status, 200, r.body);
				assert.equal(r.json().id, id);
			}
			assert.equal(up.count('GET', p), 1, 'one upstream GET for 30 requests on three nodes');
			const leases = await redis.cli('--scan', '--pattern', 'respcache:l:*');
			assert.equal(leases, '', 'the lease went with the fetch');
		});
	});
});

test('a node holding the lease that gets no answer to store lets the others fetch at once', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed({ background: true });	// queued: never stored
			const p = `/v1/responses/${id}`;
			const held = h.holdGets(up);
			const ra = h.request(a.url + p);
			await h.until(() => held.length === 1, { what: "A's upstream GET" });
			const rb = h.request(b.url + p);
			await h.until(async () => await h.metric(b, 'respcache_shared_lookups_total', '{result="waited"}') === 1,
				{ what: 'B waiting on A\'s fetch' });
			held[0].res.writeHead(200, { 'content-type': 'application/json' });
			held[0].res.end(JSON.stringify(up.responseObject(up.get(id))));
			assert.equal((await ra).json().status, 'queued');
			// A's fetch stored nothing; B takes the lease and fetches its own.
			await h.until(() => held.length === 2, { what: "B's own upstream GET" });
			held[1].res.writeHead(200, { 'content-type': 'application/json' });
			held[1].res.end(JSON.stringify(up.responseObject(up.get(id))));
			const r = await rb;
			assert.equal(r.status, 200);
			assert.equal(r.json().status, 'queued');
		});
	});
});

test('[client] ownership is the same through any node: what alice created through A is hers through B', { skip }, async () => {
	const redis = await startRedis();
	const dir = h.tmpdir();
	const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
	const keyFile = path.join(dir, 'team.key');
	fs.writeFileSync(keyFile, 'sk-upstream-TEAM\n', { mode: 0o600 });
	const clients = `[credential team]\nkey_file = ${keyFile}\n` +
		`[client alice]\ntoken_sha256 = ${sha('tok-alice')}\ncredential = team\n` +
		`[client anna]\ntoken_sha256 = ${sha('tok-anna')}\ncredential = team\n`;
	const bearer = (t) => ({ authorization: `Bearer ${t}` });
	try {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const c = await h.request(`${a.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice'),
				body: { model: 'gpt-4o', input: 'alice only' } });
			assert.equal(c.status, 200, c.body);
			const id = c.json().id;
			const p = `/v1/responses/${id}`;
			// B has read A's record from the stream (a create, then nothing else).
			await h.until(async () => await h.metric(b, 'respcache_shared_stream_applied_total') >= 1,
				{ what: "A's owner record on B" });
			const before = up.requests.length;
			const anna = await h.request(b.url + p, { headers: bearer('tok-anna') });
			h.assertOpenAIError(anna, 404, 'anna through B');
			const follow = await h.request(`${b.url}/v1/responses`, { method: 'POST', headers: bearer('tok-anna'),
				body: { model: 'gpt-4o', input: 'go on', previous_response_id: id } });
			h.assertOpenAIError(follow, 404, "anna continuing alice's conversation through B");
			assert.equal(up.requests.length, before, "none of anna's requests reached the upstream");
			const alice = await h.request(b.url + p, { headers: bearer('tok-alice') });
			assert.equal(alice.status, 200, alice.body);
			h.assertXCache(alice, 'HIT', 'alice through B: from the shared tier');
			assert.ok(await h.metric(b, 'respcache_shared_stream_lag_seconds') < 5, 'a lag in seconds');
		}, { extra: (i) => `${clients}` });
	} finally {
		await redis.stop();
	}
});

test('pass-through keys are tenants through any node: one key\'s entry never answers another key', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const k1 = { authorization: 'Bearer sk-tenant-one' };
			const k2 = { authorization: 'Bearer sk-tenant-two' };
			assert.equal((await h.request(a.url + p, { headers: k1 })).status, 200);
			await h.until(async () => await entriesOf(redis, id) === 1, { what: "key one's entry in Redis" });
			h.assertXCache(await h.request(b.url + p, { headers: k1 }), 'HIT', 'key one through B: from Redis');
			const two = await h.request(b.url + p, { headers: k2 });
			assert.equal(two.status, 200);
			h.assertXCache(two, 'MISS', 'key two through B: its own fetch');
			assert.equal(up.count('GET', p), 2, 'one upstream GET per tenant, whatever the node');
			await h.until(async () => await entriesOf(redis, id) === 2, { what: "key two's entry in Redis" });
			h.assertXCache(await h.request(a.url + p, { headers: k2 }), 'HIT', 'key two through A: from Redis');
			assert.equal(up.count('GET', p), 2);
		});
	});
});

test('a Redis that refuses AUTH (no password set there): the node backs off, logs at most once a second, never "connected"', { skip }, async () => {
	const redis = await startRedis();
	const dir = h.tmpdir();
	const pw = path.join(dir, 'pw');
	fs.writeFileSync(pw, 'a-password-redis-does-not-want\n', { mode: 0o600 });
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url, config: sharedConf(redis, `password_file = ${pw}\n`) });
	try {
		// Connections Redis took, less those of redis-cli asking.
		let asked = 0;
		const conns = async () => Number((await redis.cli('INFO', 'stats'))
			.match(/total_connections_received:(\d+)/)[1]) - ++asked;
		const base = await conns();
		await h.until(() => /Redis refused the connection's set-up/.test(px.stderr()), { what: 'the refusal' });
		const t0 = Date.now();
		// Three connections (two workers, the stream's) backing off from 100 ms,
		// doubling: 15 attempts take about 1.5 s; retried every 100 ms, 0.5 s.
		await h.until(async () => (await conns()) - base >= 15, { timeoutMs: 20000, what: '15 connections' });
		const took = Date.now() - t0;
		assert.ok(took >= 1000, `15 attempts in ${took} ms: no backoff`);
		assert.ok(!/connected to Redis/.test(px.stderr()), 'never "connected"');
		assert.equal(await h.metric(px, 'respcache_shared_up'), 0);
		assert.ok(!px.stderr().includes('a-password-redis-does-not-want'), 'the password is not logged');
	} finally {
		await px.stop();
		await up.close();
		await redis.stop();
	}
});

test('the client of a request waiting on the fleet leaves: those waiting behind it still make no upstream request', { skip }, async () => {
	const http = require('node:http');
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			const held = h.holdGets(up);
			const ra = h.request(a.url + p, { agent: false });
			await h.until(() => held.length === 1, { what: "A's upstream GET (A holds the lease)" });
			// B's first request waits on A's fetch in Redis; two more wait on it.
			const leader = http.get(b.url + p, { agent: false, headers: { authorization: h.DEFAULT_AUTH } });
			leader.on('error', () => {});
			await h.until(async () => await h.metric(b, 'respcache_requests_by_state', '{state="shared"}') === 1,
				{ what: "B's request asking Redis" });
			const rest = [h.request(b.url + p, { agent: false }), h.request(b.url + p, { agent: false })];
			await h.until(async () => await h.metric(b, 'respcache_requests_by_state', '{state="waiting"}') === 2,
				{ what: 'two waiting behind it' });
			leader.destroy();
			// The two ask Redis themselves, and wait on A's fetch too.
			await h.until(async () => await h.metric(b, 'respcache_requests_by_state', '{state="shared"}') === 2,
				{ what: 'the two asking Redis' });
			assert.equal(held.length, 1, 'no second upstream GET');
			up.override = null;
			held[0].res.writeHead(200, { 'content-type': 'application/json' });
			held[0].res.end(JSON.stringify(up.responseObject(up.get(id))));
			assert.equal((await ra).status, 200);
			for (const r of await Promise.all(rest)) {
				assert.equal(r.status, 200, r.body);
				h.assertXCache(r, 'HIT', 'from Redis, once A stored it');
			}
			assert.equal(up.count('GET', p), 1, 'one upstream GET in all');
		});
	});
});

test('an operator\'s purge (admin DELETE /cache/{id}) reaches the fleet: Redis\'s copy and the other nodes\' go', { skip }, async () => {
	await withRedis(async (redis) => {
		await withFleet(redis, 2, async ({ up, nodes: [a, b] }) => {
			const id = up.seed();
			const p = `/v1/responses/${id}`;
			assert.equal((await h.request(a.url + p)).status, 200);
			await h.until(async () => await entriesOf(redis, id) === 1, { what: "A's entry in Redis" });
			h.assertXCache(await h.request(b.url + p), 'HIT', 'B has it (from Redis, then its own)');
			h.assertXCache(await h.request(b.url + p), 'HIT');
			const r = await h.request(`${a.adminUrl}/cache/${id}`, { method: 'DELETE', headers: { authorization: null } });
			assert.equal(r.status, 200, r.body);
			assert.equal(r.json().fleet, true);
			await h.until(async () => await entriesOf(redis, id) === 0, { what: 'Redis\'s copy gone' });
			await h.until(async () => (await h.request(b.url + p)).headers['x-cache'] === 'MISS',
				{ what: 'B\'s own copy gone (a fetch again)' });
			assert.equal(up.count('GET', p), 2, 'one fetch before the purge, one after');
		});
	});
});
