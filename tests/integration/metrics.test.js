'use strict';
// GET /metrics on the admin listener: valid Prometheus text (promtool), and
// counters and gauges that move with what clients and the upstream do; no
// key or token ever appears in it.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

/*
 * The text exposition format, parsed: series as {name, labels, value}, and
 * the TYPE of each family.
 */
function parseExposition(text) {
	const series = [];
	const types = new Map();
	for (const line of text.split('\n')) {
		if (line === '') continue;
		let m;
		if ((m = /^# TYPE (\S+) (\S+)$/.exec(line))) {
			types.set(m[1], m[2]);
			continue;
		}
		if (line.startsWith('#')) continue;
		m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
		assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
		const labels = {};
		if (m[2]) {
			const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
			let lm;
			let at = 0;
			while ((lm = re.exec(m[2])) !== null) {
				labels[lm[1]] = lm[2];
				at = re.lastIndex;
			}
			assert.equal(at, m[2].length, `labels of ${JSON.stringify(line)}`);
		}
		const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
		assert.ok(!Number.isNaN(value), `value of ${JSON.stringify(line)}`);
		series.push({ name: m[1], labels, value });
	}
	return { series, types };
}

class Scrape {
	constructor(text) {
		this.text = text;
		Object.assign(this, parseExposition(text));
	}

	/* The value of the one series with exactly these labels; 0 if absent (a counter not yet bumped). */
	get(name, labels = {}) {
		const want = JSON.stringify(Object.entries(labels).sort());
		const found = this.series.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
		assert.ok(found.length <= 1, `${name}${JSON.stringify(labels)} appears ${found.length} times`);
		return found.length ? found[0].value : 0;
	}

	/* The sum over every series of name whose labels include these. */
	sum(name, labels = {}) {
		return this.series.filter((s) => s.name === name &&
			Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
	}

	has(name) {
		return this.series.some((s) => s.name === name);
	}
}

async function scrape(px) {
	const r = await h.request(`${px.adminUrl}/metrics`, { headers: { authorization: null } });
	assert.equal(r.status, 200, r.body.slice(0, 300));
	assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
	return new Scrape(r.body);
}

const REQ = 'respcache_requests_total';
const HIT = { route: 'response', method: 'GET', status: '2xx', cache: 'hit' };
const MISS = { route: 'response', method: 'GET', status: '2xx', cache: 'miss' };

test('/metrics passes promtool check metrics, after traffic of every kind', async (t) => {
	const probe = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
	if (probe.error && probe.error.code === 'ENOENT') {
		t.skip('promtool is not installed (Debian: apt-get install prometheus)');
		return;
	}
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		await h.request(`${px.url}/v1/responses/${id}`);
		await h.request(`${px.url}/v1/responses/${id}`);
		await h.request(`${px.url}/v1/responses/bad%2Fid`);
		up.failNext(503);
		await h.request(`${px.url}/v1/responses/${up.seed()}`);
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'x', stream: true } });
		await s.done;
		const m = await scrape(px);
		const r = spawnSync('promtool', ['check', 'metrics'], { input: m.text, encoding: 'utf8', timeout: 10000 });
		assert.equal(r.error, undefined, `promtool: ${r.error}`);
		assert.equal(r.status, 0, `promtool check metrics failed:\n${r.stdout}${r.stderr}\n--- body ---\n${m.text}`);
		assert.equal((r.stdout + r.stderr).trim(), '', `promtool has remarks:\n${r.stdout}${r.stderr}`);
		// Every family the daemon documents is there, with its type.
		for (const [name, type] of Object.entries({
			respcache_requests_total: 'counter', respcache_request_duration_seconds: 'histogram',
			respcache_upstream_requests_total: 'counter', respcache_upstream_duration_seconds: 'histogram',
			respcache_upstream_errors_total: 'counter', respcache_cache_entries: 'gauge', respcache_cache_bytes: 'gauge',
			respcache_cache_max_bytes: 'gauge', respcache_cache_map_bytes: 'gauge', respcache_cache_map_used_bytes: 'gauge',
			respcache_cache_evictions_total: 'counter', respcache_cache_map_full_total: 'counter',
			respcache_cache_errors_total: 'counter', respcache_inflight_requests: 'gauge', respcache_open_streams: 'gauge',
			respcache_config_reloads_total: 'counter', respcache_accept_errors_total: 'counter',
			respcache_workers: 'gauge', respcache_start_time_seconds: 'gauge',
			respcache_build_info: 'gauge',
		})) {
			assert.equal(m.types.get(name), type, `# TYPE ${name} ${type}`);
		}
	});
});

test('N hits count exactly N; a miss counts miss and one upstream 2xx; histogram counts match the request counts', async () => {
	await h.withStack({ proxy: { args: ['--workers', '3'] } }, async ({ up, px }) => {
		const t0 = Math.floor(Date.now() / 1000);
		const id = up.seed();
		const p = `${px.url}/v1/responses/${id}`;
		const m0 = await scrape(px);
		assert.equal(m0.get(REQ, HIT), 0);
		assert.equal(m0.get(REQ, MISS), 0);
		assert.equal(m0.get('respcache_upstream_requests_total', { status: '2xx' }), 0);
		assert.equal(m0.get('respcache_workers'), 3, 'respcache_workers is --workers');
		const started = m0.get('respcache_start_time_seconds');
		assert.ok(started >= t0 - 10 && started <= Math.ceil(Date.now() / 1000), `start_time_seconds ${started} is about now (${t0})`);
		const version = spawnSync(h.daemonPath(), ['-V'], { encoding: 'utf8' }).stdout.trim().split(' ')[1];
		assert.equal(m0.get('respcache_build_info', { version }), 1, `build_info{version="${version}"} 1`);

		h.assertXCache(await h.request(p), 'MISS', 'first GET');
		const m1 = await scrape(px);
		assert.equal(m1.get(REQ, MISS), 1, 'one miss');
		assert.equal(m1.get(REQ, HIT), 0);
		assert.equal(m1.get('respcache_upstream_requests_total', { status: '2xx' }), 1, 'one upstream 2xx');
		assert.equal(m1.get('respcache_upstream_duration_seconds_count'), 1);
		assert.ok(m1.get('respcache_upstream_duration_seconds_sum') > 0);
		assert.equal(m1.get('respcache_cache_entries'), 1);

		// N hits, over several connections (so several workers).
		const N = 17;
		const agents = [1, 2, 3].map(() => new http.Agent({ keepAlive: false }));
		for (let i = 0; i < N; i++) h.assertXCache(await h.request(p, { agent: agents[i % 3] }), 'HIT', `GET #${i + 2}`);
		const m2 = await scrape(px);
		assert.equal(m2.get(REQ, HIT) - m1.get(REQ, HIT), N, `${N} hits counted, exactly`);
		assert.equal(m2.get(REQ, MISS), 1, 'still one miss');
		assert.equal(m2.get('respcache_upstream_requests_total', { status: '2xx' }), 1, 'hits never count upstream');
		assert.equal(m2.sum('respcache_upstream_requests_total'), 1);

		// A 4xx the proxy answers itself: bypass.
		const bad = await h.request(`${px.url}/v1/responses/bad%2Fid`);
		assert.equal(bad.status, 400);
		// An upstream 404 (an unknown id): a miss with status 4xx, and an upstream 4xx.
		assert.equal((await h.request(`${px.url}/v1/responses/resp_unknown`)).status, 404);
		const m3 = await scrape(px);
		assert.equal(m3.sum(REQ, { status: '4xx', cache: 'bypass' }), 1, 'the 400 counts as bypass');
		assert.equal(m3.get(REQ, { route: 'response', method: 'GET', status: '4xx', cache: 'miss' }), 1, 'the upstream 404 counts as a 4xx miss');
		assert.equal(m3.get('respcache_upstream_requests_total', { status: '4xx' }), 1);

		// Each histogram's _count is the sum of requests_total for its cache label, and buckets are cumulative.
		for (const cache of ['hit', 'miss', 'coalesced', 'bypass']) {
			const count = m3.get('respcache_request_duration_seconds_count', { cache });
			assert.equal(count, m3.sum(REQ, { cache }), `request_duration_seconds_count{cache="${cache}"}`);
			assert.equal(m3.get('respcache_request_duration_seconds_bucket', { cache, le: '+Inf' }), count, `+Inf bucket of ${cache}`);
			const buckets = m3.series.filter((s) => s.name === 'respcache_request_duration_seconds_bucket' && s.labels.cache === cache);
			for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, `cumulative buckets of ${cache}`);
		}
		assert.equal(m3.get('respcache_request_duration_seconds_count', { cache: 'hit' }), N);
		assert.equal(m3.get('respcache_upstream_duration_seconds_count'), m3.sum('respcache_upstream_requests_total'),
			'one upstream duration per upstream answer');
		assert.equal(m3.get('respcache_inflight_requests'), 0, 'nothing in flight');
		for (const a of agents) a.destroy();
	});
});

test('a 401 for an unknown client token counts as bypass, and no key or token appears in /metrics', async () => {
	const dir = h.tmpdir();
	const keyFile = path.join(dir, 'openai.key');
	fs.writeFileSync(keyFile, 'sk-upstream-SECRET-KEY\n', { mode: 0o600 });
	const config = `[credential main]\nkey_file = ${keyFile}\n\n[client alice]\ntoken_sha256 = ${sha('tok-alice-SECRET')}\ncredential = main\n`;
	await h.withStack({ upstream: { requireKey: 'sk-upstream-SECRET-KEY' }, proxy: { config } }, async ({ up, px }) => {
		const id = up.seed();
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice-SECRET') })).status, 200);
		assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice-SECRET') })).status, 200);
		for (const tok of ['tok-eve-SECRET', 'sk-upstream-SECRET-KEY']) {
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer(tok) })).status, 401);
		}
		assert.equal((await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-eve-SECRET'), body: { model: 'gpt-4o', input: 'x' } })).status, 401);
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice-SECRET'), body: { model: 'gpt-4o', input: 'x', stream: true } });
		await s.done;
		const m = await scrape(px);
		assert.equal(m.get(REQ, { route: 'response', method: 'GET', status: '4xx', cache: 'bypass' }), 2, 'the two GETs refused with 401');
		assert.equal(m.get(REQ, { route: 'create', method: 'POST', status: '4xx', cache: 'bypass' }), 1, 'the POST refused with 401');
		assert.equal(m.get(REQ, MISS), 1);
		assert.equal(m.get(REQ, HIT), 1);
		assert.equal(m.get(REQ, { route: 'create', method: 'POST', status: '2xx', cache: 'bypass' }), 1, 'a create (stream) is a bypass');
		assert.equal(m.get('respcache_upstream_requests_total', { status: '4xx' }), 0, 'no 401 came from the upstream');
		for (const secret of ['sk-upstream-SECRET-KEY', 'tok-alice-SECRET', 'tok-eve-SECRET', 'SECRET',
			sha('tok-alice-SECRET'), sha('sk-upstream-SECRET-KEY'), sha('tok-eve-SECRET'), 'alice']) {
			assert.ok(!m.text.includes(secret), `"${secret}" appears in /metrics`);
		}
	});
});

test('an upstream that refuses connections counts upstream_errors_total{kind="connect"} and a 5xx', async () => {
	const closed = await h.freePort();
	const px = await h.startProxy({ upstream: `http://127.0.0.1:${closed}`, config: '[upstream]\nconnect_timeout = 2\n' });
	try {
		const m0 = await scrape(px);
		assert.equal(m0.get('respcache_upstream_errors_total', { kind: 'connect' }), 0);
		for (let i = 0; i < 2; i++) {
			const r = await h.request(`${px.url}/v1/responses/resp_nowhere${i}`);
			h.assertOpenAIError(r, 502, 'GET with the upstream down');
		}
		// A reply goes out before its request is counted (reply_direct()):
		// the count may trail the client's answer by a moment.
		const m = await h.until(async () => {
			const s = await scrape(px);
			return s.sum(REQ, { status: '5xx' }) === 2 ? s : null;
		}, { what: 'the two 502s counted' });
		assert.equal(m.get('respcache_upstream_errors_total', { kind: 'connect' }), 2, 'two connect errors');
		for (const kind of ['timeout', 'tls', 'protocol']) {
			assert.equal(m.get('respcache_upstream_errors_total', { kind }), 0, `no ${kind} error`);
		}
		assert.equal(m.sum('respcache_upstream_requests_total'), 0, 'no upstream answer was counted');
		assert.equal(m.sum(REQ, { status: '5xx' }), 2, 'the clients\' 502s are counted');
	} finally {
		await px.stop();
	}
});

test('open_streams and inflight_requests are 1 while a held stream is open, 0 after it ends or its client leaves', async () => {
	await h.withStack({}, async ({ up, px }) => {
		let release;
		up.holdStream = new Promise((r) => { release = r; });
		try {
			const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'held', stream: true } });
			await h.within(s.firstEvent, 5000, 'first event');
			const m1 = await scrape(px);
			assert.equal(m1.get('respcache_open_streams'), 1, 'one stream open');
			assert.equal(m1.get('respcache_inflight_requests'), 1, 'one request in flight');
			release();
			await h.within(s.done, 5000, 'the stream to end');
			await h.until(async () => (await scrape(px)).get('respcache_open_streams') === 0, { what: 'open_streams to go back to 0' });
			const m2 = await scrape(px);
			assert.equal(m2.get('respcache_inflight_requests'), 0);
			assert.equal(m2.get(REQ, { route: 'create', method: 'POST', status: '2xx', cache: 'bypass' }), 1);

			// A client that leaves a held stream: 0 again, counted once (499).
			up.holdStream = new Promise((r) => { release = r; });
			const s2 = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 'left', stream: true }, agent: false });
			await h.within(s2.firstEvent, 5000, 'first event of the second stream');
			assert.equal((await scrape(px)).get('respcache_open_streams'), 1);
			s2.abort();
			await h.until(async () => (await scrape(px)).get('respcache_open_streams') === 0, { what: 'open_streams to go back to 0 after the client left' });
			release();
			const m3 = await scrape(px);
			assert.equal(m3.get('respcache_inflight_requests'), 0);
			assert.equal(m3.get(REQ, { route: 'create', method: 'POST', status: '4xx', cache: 'bypass' }), 1, 'the abandoned stream counts once, as a 4xx (499)');
			assert.equal(m3.get(REQ, { route: 'create', method: 'POST', status: '2xx', cache: 'bypass' }), 1, 'and not as a 2xx too');
		} finally {
			release();
		}
	});
});

test('SIGHUP counts config_reloads_total{result="ok"}; a broken config counts result="failed"', async () => {
	await h.withStack({ proxy: { config: '[log]\nlevel = info\n' } }, async ({ up, px }) => {
		const confFile = px.args[px.args.indexOf('--config') + 1];
		const reloads = async () => {
			const m = await scrape(px);
			return { ok: m.get('respcache_config_reloads_total', { result: 'ok' }), failed: m.get('respcache_config_reloads_total', { result: 'failed' }) };
		};
		assert.deepEqual(await reloads(), { ok: 0, failed: 0 });
		process.kill(px.pid, 'SIGHUP');
		await h.until(async () => (await reloads()).ok === 1, { what: 'reloads{ok} to reach 1' });
		assert.deepEqual(await reloads(), { ok: 1, failed: 0 });

		fs.writeFileSync(confFile, '[log]\nlevel = loud\n');
		process.kill(px.pid, 'SIGHUP');
		await h.until(async () => (await reloads()).failed === 1, { what: 'reloads{failed} to reach 1' });
		assert.deepEqual(await reloads(), { ok: 1, failed: 1 });
		assert.match(px.stderr(), /reload refused/);

		fs.writeFileSync(confFile, '[log]\nlevel = info\n');
		process.kill(px.pid, 'SIGHUP');
		await h.until(async () => (await reloads()).ok === 2, { what: 'reloads{ok} to reach 2' });
		assert.deepEqual(await reloads(), { ok: 2, failed: 1 });
		assert.equal((await h.request(`${px.url}/v1/responses/${up.seed()}`)).status, 200, 'still serving');
	});
});

test('an upstream that hangs counts kind="timeout"; one that cuts its answer counts kind="protocol"', async () => {
	await h.withStack({
		upstream: { hang: true },
		proxy: { config: '[upstream]\ntimeout = 1\nconnect_timeout = 1\n' },
	}, async ({ up, px }) => {
		const r = await h.request(`${px.url}/v1/responses/resp_hangs`, { timeout: 8000 });
		h.assertOpenAIError(r, 504, 'GET with the upstream hanging');
		up.hang = false;
		// Promise a longer body than is sent, then close: a cut answer.
		up.override = (req, res) => {
			if (req.method !== 'GET') return false;
			res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
			res.write('{"id":"resp_cut"');
			setImmediate(() => res.socket.destroy());
			return true;
		};
		const c = await h.request(`${px.url}/v1/responses/resp_cut`);
		h.assertOpenAIError(c, 502, 'GET with the answer cut short');
		const m = await scrape(px);
		assert.equal(m.get('respcache_upstream_errors_total', { kind: 'timeout' }), 1, 'one timeout');
		assert.equal(m.get('respcache_upstream_errors_total', { kind: 'protocol' }), 1, 'one cut answer');
		assert.equal(m.get('respcache_upstream_errors_total', { kind: 'connect' }), 0, 'no connect error');
		assert.equal(m.sum(REQ, { status: '5xx' }), 2, 'both 5xx answers are counted');
	});
});
