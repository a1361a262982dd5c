'use strict';
// One upstream fetch per miss: concurrent cacheable GETs of one key wait for
// the fetch in flight and all get its answer, whatever it is (final or not,
// error or not); tenants are never merged; clients leaving do not disturb
// the others.
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const h = require('../lib/harness');

const DEBUG = '[log]\nlevel = debug\n';

/*
 * Ready when the proxy's metrics show n requests waiting on a fetch, and
 * that fetch has reached the upstream.
 */
async function waiters(px, n, held) {
	await h.until(async () => (await h.inState(px, 'waiting')) >= n,
		{ timeoutMs: 10000, what: `${n} requests waiting on the fetch in flight` });
	await h.until(() => held.length >= 1, { what: 'the fetch to reach the upstream' });
}

function many(n, url, opts = {}) {
	const agent = new http.Agent({ keepAlive: true, maxSockets: n });
	const all = [];
	for (let i = 0; i < n; i++) all.push(h.request(url, { agent, timeout: 20000, ...opts }));
	return { all: Promise.all(all), agent };
}

test('50 concurrent GETs of one uncached id make one upstream GET, and all get identical answers', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const { all, agent } = many(50, px.url + p);
		await waiters(px, 49, held);
		assert.equal(up.count('GET', p), 1, 'one GET reached the upstream');
		up.override = null;
		up.sendJSON(held[0].res, 200, up.responseObject(up.get(id)));
		const rs = await all;
		agent.destroy();
		for (const r of rs) {
			assert.equal(r.status, 200);
			assert.equal(r.body, rs[0].body, 'identical bodies');
			assert.equal(r.headers['x-request-id'], rs[0].headers['x-request-id'], 'the same upstream answer');
			assert.equal(r.headers.etag, rs[0].headers.etag);
			assert.equal(r.headers['content-type'], 'application/json');
		}
		assert.equal(JSON.parse(rs[0].body).id, id);
		assert.equal(up.count('GET', p), 1, 'still one upstream GET');
		h.assertXCache(await h.request(px.url + p), 'HIT', 'the next GET');
		assert.equal(up.count('GET', p), 1);
	});
});

test('an error answer is shared by all who waited, and not cached', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const { all, agent } = many(10, px.url + p);
		await waiters(px, 9, held);
		up.override = null;
		up.sendJSON(held[0].res, 500, { error: { message: 'boom', type: 'server_error', param: null, code: null } });
		const rs = await all;
		agent.destroy();
		for (const r of rs) {
			assert.equal(r.status, 500);
			assert.equal(r.body, rs[0].body);
		}
		assert.equal(up.count('GET', p), 1);
		assert.equal((await h.request(px.url + p)).status, 200, 'the next GET asks again');
		assert.equal(up.count('GET', p), 2);
	});
});

test('a broken upstream answer gives every waiter the same 502', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const held = h.holdGets(up);
		const { all, agent } = many(5, `${px.url}/v1/responses/${id}`);
		await waiters(px, 4, held);
		held[0].res.socket.destroy();
		const rs = await all;
		agent.destroy();
		for (const r of rs) {
			h.assertOpenAIError(r, 502, 'waiter');
			assert.equal(r.body, rs[0].body);
		}
		assert.equal(up.count('GET'), 1);
	});
});

test('a not-final answer is shared but not cached', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed({ background: true });
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const { all, agent } = many(5, px.url + p);
		await waiters(px, 4, held);
		up.override = null;
		up.sendJSON(held[0].res, 200, up.responseObject({ ...up.get(id), status: 'in_progress' }));
		const rs = await all;
		agent.destroy();
		for (const r of rs) assert.equal(r.json().status, 'in_progress');
		up.finish(id);
		assert.equal((await h.request(px.url + p)).json().status, 'completed', 'the next poll asks again');
		assert.equal(up.count('GET', p), 2);
	});
});

test('two tenants never share a fetch', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const a = h.request(px.url + p, { headers: { authorization: 'Bearer sk-alice' }, agent: false });
		const b = h.request(px.url + p, { headers: { authorization: 'Bearer sk-bob' }, agent: false });
		await h.until(() => held.length === 2, { what: 'both tenants\' GETs to reach the upstream' });
		up.override = null;
		for (const { res } of held) up.sendJSON(res, 200, up.responseObject(up.get(id)));
		assert.equal((await a).status, 200);
		assert.equal((await b).status, 200);
		assert.equal(await h.metric(px, 'respcache_requests_total', '{route="response",method="GET",status="2xx",cache="coalesced"}'), 0,
			'nobody waited on another tenant\'s fetch');
		assert.equal(await h.metric(px, 'respcache_requests_total', '{route="response",method="GET",status="2xx",cache="miss"}'), 2);
	});
});

/* A GET the test can abandon: {req} to destroy. */
function abandonable(url) {
	const req = http.get(url, { agent: false, headers: { authorization: h.DEFAULT_AUTH } });
	req.on('error', () => {});
	return req;
}

test('the first client leaving does not cancel the fetch others wait on; a waiter leaving disturbs nobody', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const first = abandonable(px.url + p);
		await h.until(() => held.length === 1, { what: 'the first GET to reach the upstream' });
		const { all, agent } = many(3, px.url + p);
		const quitter = abandonable(px.url + p);
		await waiters(px, 4, held);
		first.destroy();
		quitter.destroy();
		// The fetcher's request goes on for the others; the waiter's ends.
		await h.until(async () => (await h.inState(px, 'orphaned')) === 1 &&
			(await h.inState(px, 'waiting')) === 3, { what: 'the proxy to see both clients leave' });
		assert.equal(held[0].res.destroyed, false, 'the upstream request was not cancelled');
		up.override = null;
		up.sendJSON(held[0].res, 200, up.responseObject(up.get(id)));
		const rs = await all;
		agent.destroy();
		for (const r of rs) assert.equal(r.status, 200);
		assert.equal(up.count('GET', p), 1);
		h.assertXCache(await h.request(px.url + p), 'HIT', 'the answer was cached though its first client left');
		assert.equal(up.count('GET', p), 1);
	});
});

test('a lone client leaving cancels its fetch', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const held = h.holdGets(up);
		const only = abandonable(`${px.url}/v1/responses/${id}`);
		await h.until(() => held.length === 1, { what: 'the GET to reach the upstream' });
		only.destroy();
		await h.until(() => held[0].res.destroyed || held[0].req.socket.destroyed,
			{ timeoutMs: 3000, what: 'the upstream request to be closed' });
	});
});

test('a fetch that turns out to be a stream hands its waiters back to fetch for themselves', async () => {
	await h.withStack({ proxy: { config: DEBUG } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const held = h.holdGets(up);
		const first = abandonable(px.url + p);
		await h.until(() => held.length === 1, { what: 'the first GET to reach the upstream' });
		const waiter = h.request(px.url + p, { agent: false });
		await waiters(px, 1, held);
		// Its own client gone, the fetch goes on for the waiter...
		first.destroy();
		await h.until(async () => (await h.inState(px, 'orphaned')) === 1, { what: 'the proxy to see the first client leave' });
		// ...and ends as an (empty) event stream, which nobody can share.
		up.override = null;
		held[0].res.writeHead(200, { 'content-type': 'text/event-stream', 'content-length': '0' });
		held[0].res.end();
		const r = await waiter;
		assert.equal(r.status, 200, r.body);
		assert.equal(r.json().id, id);
		assert.equal(up.count('GET', p), 2, 'the waiter fetched for itself');
	});
});
