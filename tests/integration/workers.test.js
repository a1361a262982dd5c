'use strict';
// workers = N: N event loops, each accepting on its own SO_REUSEPORT socket.
// One upstream fetch per miss holds across them; SIGTERM drains every
// worker; shutdown_timeout cuts what is left and the daemon exits 0.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const h = require('../lib/harness');

const { metric } = h;

/* n GETs at once, each on a connection of its own (agent: false). */
function spread(n, url, opts = {}) {
	const all = [];
	for (let i = 0; i < n; i++) all.push(h.request(url, { agent: false, timeout: 20000, ...opts }));
	return Promise.all(all);
}

test('workers = 4: "4 workers" at start; 100 concurrent GETs of one uncached id over 100 connections make one upstream GET', async () => {
	await h.withStack({ proxy: { config: '[server]\nworkers = 4\n' } }, async ({ up, px }) => {
		assert.match(px.stderr(), /respcache\[info\]: respcache \d+\.\d+\.\d+: upstream \S+, cache .*, 4 workers, /,
			`the start-up line says 4 workers: ${px.stderr()}`);
		assert.equal(await metric(px, 'respcache_workers'), 4);

		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const all = spread(100, px.url + p);
		// All 100 are in the proxy's hands, and one fetch has reached the upstream.
		await h.until(async () => (await metric(px, 'respcache_inflight_requests')) === 100,
			{ timeoutMs: 15000, what: '100 requests in flight' });
		await h.until(() => held.length >= 1, { what: 'the fetch to reach the upstream' });
		assert.equal(held.length, 1, 'one upstream GET while 100 clients wait');
		up.override = null;
		up.sendJSON(held[0].res, 200, up.responseObject(up.get(id)));
		const rs = await all;
		for (const r of rs) {
			assert.equal(r.status, 200, r.body.slice(0, 200));
			assert.equal(r.body, rs[0].body, 'identical bodies');
			assert.equal(r.headers['x-request-id'], rs[0].headers['x-request-id'], 'the one upstream answer');
		}
		assert.equal(JSON.parse(rs[0].body).id, id);
		assert.equal(up.count('GET', p), 1, 'exactly one upstream GET');
		// The 99 that waited were answered by another worker's fetch (or their own worker's).
		assert.equal(await metric(px, 'respcache_requests_total', '{route="response",method="GET",status="2xx",cache="miss"}'), 1);
		assert.equal(await metric(px, 'respcache_requests_total', '{route="response",method="GET",status="2xx",cache="coalesced"}'), 99);
		// And the answer is cached for every worker.
		for (const r of await spread(12, px.url + p)) h.assertXCache(r, 'HIT', 'a GET after the fetch');
		assert.equal(up.count('GET', p), 1);
	});
});

test('workers = 4: the first client leaving does not cancel the fetch that clients on other workers wait on', async () => {
	await h.withStack({ proxy: { config: '[server]\nworkers = 4\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const first = http.get(px.url + p, { agent: false, headers: { authorization: h.DEFAULT_AUTH } });
		first.on('error', () => {});
		await h.until(() => held.length === 1, { what: 'the first GET to reach the upstream' });
		const others = spread(20, px.url + p);
		await h.until(async () => (await metric(px, 'respcache_inflight_requests')) === 21, { what: '21 requests in flight' });
		first.destroy();
		// Its request goes on, orphaned, for the 20 that wait on its fetch.
		await h.until(async () => (await h.inState(px, 'orphaned')) === 1, { what: 'the first client to be gone' });
		assert.equal(await h.inState(px, 'waiting'), 20);
		assert.equal(await metric(px, 'respcache_inflight_requests'), 21, 'the orphaned fetch is still in the proxy\'s hands');
		assert.equal(held[0].res.destroyed, false, 'the upstream request was not cancelled');
		up.override = null;
		up.sendJSON(held[0].res, 200, up.responseObject(up.get(id)));
		const rs = await others;
		for (const r of rs) assert.equal(r.status, 200, r.body.slice(0, 200));
		assert.equal(up.count('GET', p), 1, 'one upstream GET in all');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'cached though its first client left');
	});
});

test('workers = 4, SIGTERM with streams in flight on several workers: they complete, new connections are refused, exit 0', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url, config: '[server]\nworkers = 4\n' });
	let release;
	up.holdStream = new Promise((r) => { release = r; });
	try {
		const streams = await Promise.all([1, 2, 3, 4, 5, 6, 7, 8].map((i) => h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', agent: false, body: { model: 'gpt-4o', input: `drain ${i}`, stream: true },
		})));
		await h.within(Promise.all(streams.map((s) => s.firstEvent)), 5000, 'every stream\'s first event');
		assert.equal(await metric(px, 'respcache_open_streams'), 8);
		process.kill(px.pid, 'SIGTERM');
		await h.until(async () => (await h.request(`${px.adminUrl}/readyz`, { headers: { authorization: null }, agent: false })).status === 503,
			{ what: 'the drain to begin' });
		// No worker accepts any more.
		await h.until(async () => {
			try {
				await h.request(`${px.url}/v1/responses/${up.seed()}`, { agent: false, timeout: 2000 });
				return false;
			} catch (e) {
				return e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET';
			}
		}, { what: 'new connections to be refused' });
		assert.equal(px.proc.exitCode, null, 'still running while the streams are open');
		release();
		for (const s of streams) {
			const { events } = await h.within(s.done, 5000, 'a stream to end');
			assert.equal(events.at(-1).event, 'response.completed', 'every stream ran to its end');
		}
		await px.exitsCleanly(10000, 'exit after the drain');
		assert.match(px.stderr(), /nothing left in flight: stopping/);
	} finally {
		release();
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('shutdown_timeout = 1: a stream that never ends gets a shutting_down error event, and the daemon exits 0 within 5 s', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url, config: '[server]\nworkers = 4\nshutdown_timeout = 1\n' });
	up.holdStream = new Promise(() => {});
	try {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', agent: false, body: { model: 'gpt-4o', input: 'forever', stream: true },
		});
		await h.within(s.firstEvent, 5000, 'first event');
		let cutAt = 0;
		s.done.then(() => { cutAt = Date.now(); }, () => { cutAt = Date.now(); });
		const t0 = Date.now();
		process.kill(px.pid, 'SIGTERM');
		const { events } = await h.within(s.done, 5000, 'the stream to be ended');
		const last = events.at(-1);
		assert.equal(last.event, 'error', `the stream ends with an error event: ${JSON.stringify(last)}`);
		assert.equal(last.json.error.code, 'shutting_down');
		assert.equal(last.json.error.type, 'server_error');
		assert.ok(cutAt - t0 >= 900, `the stream was given shutdown_timeout (cut after ${cutAt - t0} ms)`);
		await px.exitsCleanly(5000, 'exit within 5 s of SIGTERM');
		assert.ok(Date.now() - t0 < 5000, `exited ${Date.now() - t0} ms after SIGTERM`);
		assert.match(px.stderr(), /still in flight after shutdown_timeout \(1 s\): stopping anyway/);
	} finally {
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('shutdown_timeout = 1: a GET the upstream never answers gets 503 shutting_down, not a dropped connection', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url, config: '[server]\nworkers = 4\nshutdown_timeout = 1\n' });
	try {
		const id = up.seed();
		const held = h.holdGets(up);
		const get = h.request(`${px.url}/v1/responses/${id}`, { agent: false }).catch((e) => e);
		await h.until(() => held.length === 1, { what: 'the GET to reach the upstream' });
		const t0 = Date.now();
		process.kill(px.pid, 'SIGTERM');
		const g = await h.within(get, 5000, 'the held GET to end');
		assert.ok(!(g instanceof Error), `the client got no answer but "${g.message}" (${g.code}) ${Date.now() - t0} ms after SIGTERM; `
			+ `the daemon logged: ${(px.stderr().match(/.*status=503.*/) || ['nothing'])[0]}`);
		const j = h.assertOpenAIError(g, 503, 'the GET cut by the shutdown');
		assert.equal(j.error.code, 'shutting_down');
		assert.ok(Date.now() - t0 >= 900, 'after shutdown_timeout');
		await px.exitsCleanly(5000, 'exit within 5 s of SIGTERM');
	} finally {
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('workers = 4: an empty upstream answer reaches every waiter on every worker', async () => {
	await h.withStack({ proxy: { config: '[server]\nworkers = 4\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const all = spread(40, px.url + p);
		await h.until(async () => (await metric(px, 'respcache_inflight_requests')) === 40,
			{ timeoutMs: 15000, what: '40 requests in flight' });
		await h.until(() => held.length >= 1, { what: 'the fetch to reach the upstream' });
		up.override = null;
		// An error with no body at all: the copy for other workers is empty.
		held[0].res.writeHead(503, { 'content-length': '0' });
		held[0].res.end();
		for (const r of await all) {
			assert.equal(r.status, 503);
			assert.equal(r.body, '');
		}
		assert.equal(up.count('GET', p), 1);
	});
});
