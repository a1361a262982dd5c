'use strict';
// Out of file descriptors (more clients than `ulimit -n`), the daemon pauses
// accepting instead of spinning on accept(): its CPU stays low, its error
// log gets about a line a second with a count of what it held back, the
// connections it has keep being served, it accepts again once descriptors
// are free, and respcache_accept_errors_total counts the failures.  Both
// workers' listeners and the admin listener.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { spawnSync } = require('node:child_process');
const h = require('../lib/harness');

const NOFILE = 64;		/* the daemon starts with about 30 open */
const EXTRA = 150;		/* connections beyond what it can hold */
const TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/* utime + stime of a process, in seconds. */
function cpuSeconds(pid) {
	const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
	const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
	return (Number(f[11]) + Number(f[12])) / TICKS;
}

/* The error log's lines (not the access log's, also on stderr). */
function errorLines(px) {
	return px.stderr().split('\n').filter((l) => /respcache\[(error|warn|info|debug)\]/.test(l));
}

/* A counter from /metrics, over the given agent (a kept-alive connection). */
async function metric(px, agent, series) {
	const r = await h.request(`${px.adminUrl}/metrics`, { headers: { authorization: null }, agent, timeout: 5000 });
	assert.equal(r.status, 200);
	const line = r.body.split('\n').find((l) => l.startsWith(`${series} `));
	assert.ok(line, `${series} in /metrics`);
	return { value: Number(line.split(' ')[1]), text: r.body };
}

const series = (listener, error = 'emfile') =>
	`respcache_accept_errors_total{listener="${listener}",error="${error}"}`;

/* n connections to port that the kernel has completed (accepted or not). */
async function flood(port, n) {
	const socks = [];
	await Promise.all(Array.from({ length: n }, () => new Promise((resolve) => {
		const s = net.connect(port, '127.0.0.1');
		socks.push(s);
		s.on('connect', resolve);
		s.on('error', resolve);
		s.setTimeout(30000, () => s.destroy());
	})));
	return socks;
}

function closeAll(socks) {
	for (const s of socks) s.destroy();
}

/*
 * Watch the saturated daemon for ms: its CPU share, and the error log
 * lines written meanwhile.  During the window, during() runs (requests on
 * kept connections).
 */
async function watch(px, ms, during) {
	const lines0 = errorLines(px).length;
	const cpu0 = cpuSeconds(px.pid);
	const t0 = process.hrtime.bigint();
	const [got] = await Promise.all([during(), h.delay(ms)]);
	const wall = Number(process.hrtime.bigint() - t0) / 1e9;
	const cpu = cpuSeconds(px.pid) - cpu0;
	return { share: cpu / wall, cpu, wall, lines: errorLines(px).slice(lines0), got };
}

const SUPPRESSED = /accept on 127\.0\.0\.1:\d+: Too many open files; not accepting for \d+ ms \(\d+ more in the last \d+\.\d s\)/;

async function withLimitedStack(fn) {
	await h.withStack({
		proxy: {
			wrap: ['prlimit', `--nofile=${NOFILE}:${NOFILE}`],
			config: '[server]\nworkers = 2\n',
		},
	}, fn);
}

test('client listeners of 2 workers at the fd limit: no spin, a line a second, kept connections served, accepting again after', async (t) => {
	if (spawnSync('prlimit', ['--version']).error) {
		t.skip('prlimit (util-linux) is not installed');
		return;
	}
	await withLimitedStack(async ({ up, px }) => {
		const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
		const admin = new http.Agent({ keepAlive: true, maxSockets: 1 });
		const socks = [];
		try {
			const id = up.seed();
			const p = `${px.url}/v1/responses/${id}`;
			h.assertXCache(await h.request(p, { agent: client }), 'MISS', 'the first GET');
			assert.equal((await metric(px, admin, series('client'))).value, 0, 'no accept error yet');

			socks.push(...await flood(px.port, EXTRA));
			await h.until(async () => (await metric(px, admin, series('client'))).value > 0,
				{ timeoutMs: 5000, what: 'an accept error on a client listener' });

			// Saturated: every connection beyond the limit waits in a backlog,
			// on both workers' sockets (SO_REUSEPORT spreads 150 of them).
			const w = await watch(px, 1500, async () => {
				const answers = [];
				for (let i = 0; i < 3; i++) answers.push(await h.request(p, { agent: client, timeout: 5000 }));
				return answers;
			});
			assert.ok(w.share < 0.3, `CPU ${w.cpu.toFixed(2)} s over ${w.wall.toFixed(2)} s of saturation (a spinning worker takes a whole core)`);
			assert.ok(w.lines.length <= 6, `${w.lines.length} error log lines in ${w.wall.toFixed(2)} s:\n${w.lines.slice(0, 20).join('\n')}`);
			for (const r of w.got) h.assertXCache(r, 'HIT', 'a GET on the connection kept from before');

			await h.until(() => SUPPRESSED.test(px.stderr()),
				{ timeoutMs: 5000, what: 'a line with the count of those held back' });
			const accepts = errorLines(px).filter((l) => /accept on/.test(l));
			assert.ok(accepts.length >= 2 && accepts.length <= 10, `accept lines: ${accepts.length}:\n${accepts.join('\n')}`);
			for (const l of accepts) assert.match(l, /respcache\[warn\]: worker [01]: accept on /);

			closeAll(socks);
			// Both workers accept again: a new connection each time.
			await h.until(async () => {
				try {
					return (await h.request(p, { agent: false, timeout: 2000 })).status === 200;
				} catch {
					return false;
				}
			}, { timeoutMs: 10000, what: 'a new connection to be served' });
			const fresh = await Promise.all(Array.from({ length: 20 }, () => h.request(p, { agent: false, timeout: 5000 })));
			for (const r of fresh) h.assertXCache(r, 'HIT', 'a GET on a new connection after the flood');

			const m = await metric(px, false, series('client'));
			assert.ok(m.value >= 2, `client emfile errors: ${m.value}`);
			// One per pause: at most a few per listener per second, not thousands.
			assert.ok(m.value < 100, `client emfile errors: ${m.value}`);
			assert.equal((await metric(px, false, series('admin'))).value, 0, 'the admin listener had no error');
			const probe = spawnSync('promtool', ['check', 'metrics'], { input: m.text, encoding: 'utf8', timeout: 10000 });
			if (!probe.error) assert.equal(probe.status, 0, `promtool: ${probe.stdout}${probe.stderr}`);
		} finally {
			closeAll(socks);
			client.destroy();
			admin.destroy();
		}
	});
});

test('admin listener at the fd limit: no spin, kept connections (admin and client) served, admin accepts again after', async (t) => {
	if (spawnSync('prlimit', ['--version']).error) {
		t.skip('prlimit (util-linux) is not installed');
		return;
	}
	await withLimitedStack(async ({ up, px }) => {
		const client = new http.Agent({ keepAlive: true, maxSockets: 1 });
		const admin = new http.Agent({ keepAlive: true, maxSockets: 1 });
		const socks = [];
		const adminPort = Number(new URL(px.adminUrl).port);
		try {
			const id = up.seed();
			const p = `${px.url}/v1/responses/${id}`;
			h.assertXCache(await h.request(p, { agent: client }), 'MISS', 'the first GET');
			assert.equal((await metric(px, admin, series('admin'))).value, 0, 'no accept error yet');

			socks.push(...await flood(adminPort, EXTRA));
			await h.until(async () => (await metric(px, admin, series('admin'))).value > 0,
				{ timeoutMs: 5000, what: 'an accept error on the admin listener' });

			const w = await watch(px, 1500, async () => {
				const answers = [];
				for (let i = 0; i < 3; i++) {
					answers.push(await h.request(p, { agent: client, timeout: 5000 }));
					answers.push(await h.request(`${px.adminUrl}/healthz`, { headers: { authorization: null }, agent: admin, timeout: 5000 }));
				}
				return answers;
			});
			assert.ok(w.share < 0.3, `CPU ${w.cpu.toFixed(2)} s over ${w.wall.toFixed(2)} s of saturation (a spinning loop takes a whole core)`);
			assert.ok(w.lines.length <= 6, `${w.lines.length} error log lines in ${w.wall.toFixed(2)} s:\n${w.lines.slice(0, 20).join('\n')}`);
			for (const r of w.got) assert.equal(r.status, 200, `an answer on a kept connection: ${r.body.slice(0, 200)}`);

			await h.until(() => SUPPRESSED.test(px.stderr()),
				{ timeoutMs: 5000, what: 'a line with the count of those held back' });
			assert.match(px.stderr(), /respcache\[warn\]: admin: accept on 127\.0\.0\.1:\d+: Too many open files/);

			closeAll(socks);
			await h.until(async () => {
				try {
					return (await h.request(`${px.adminUrl}/healthz`, { headers: { authorization: null }, agent: false, timeout: 2000 })).status === 200;
				} catch {
					return false;
				}
			}, { timeoutMs: 10000, what: 'a new admin connection to be served' });
			const m = await metric(px, false, series('admin'));
			assert.ok(m.value >= 2 && m.value < 100, `admin emfile errors: ${m.value}`);
			h.assertXCache(await h.request(p, { agent: false }), 'HIT', 'a new client connection');
		} finally {
			closeAll(socks);
			client.destroy();
			admin.destroy();
		}
	});
});
