'use strict';
// SIGTERM drains in-flight requests, then exits 0.
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('../lib/harness');

test('SIGTERM during a stream: the stream completes, then the daemon exits 0', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url });
	let release;
	up.holdStream = new Promise((r) => { release = r; });
	try {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'drain me', stream: true },
		});
		await h.within(s.firstEvent, 5000, 'first event');
		process.kill(px.pid, 'SIGTERM');
		// Whether the daemon has seen the signal yet or not, it must not cut
		// the stream: release the upstream and read to the end.
		release();
		const { events } = await s.done;
		assert.equal(events[events.length - 1].event, 'response.completed', 'the in-flight stream was completed');
		await px.exitsCleanly(10000, 'exit after SIGTERM');
	} finally {
		release();
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('SIGTERM with idle keep-alive client connections open: exits 0 promptly', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url });
	try {
		const id = up.seed();
		// Leave a few idle keep-alive connections behind.
		await Promise.all([1, 2, 3].map(() => h.request(`${px.url}/v1/responses/${id}`)));
		const t0 = Date.now();
		await px.stop();
		assert.ok(Date.now() - t0 < 5000, `exited in ${Date.now() - t0} ms`);
	} finally {
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});

test('a second SIGTERM ends a stream with a shutting_down error event, and the daemon exits 0', async () => {
	const up = await h.startUpstream();
	const px = await h.startProxy({ upstream: up.url, config: '[log]\nlevel = debug\n' });
	let release;
	up.holdStream = new Promise((r) => { release = r; });
	try {
		const s = await h.openSSE(`${px.url}/v1/responses`, {
			method: 'POST', body: { model: 'gpt-4o', input: 'stop me', stream: true },
		});
		await h.within(s.firstEvent, 5000, 'first event');
		process.kill(px.pid, 'SIGTERM');
		// Not ready once draining: the second SIGTERM is then a second one.
		await h.until(async () => (await h.request(`${px.adminUrl}/readyz`, { headers: { authorization: null }, agent: false })).status === 503,
			{ what: 'the daemon to start draining' });
		process.kill(px.pid, 'SIGTERM');
		const { events } = await h.within(s.done, 5000, 'the stream to end');
		const last = events[events.length - 1];
		assert.equal(last.event, 'error', 'the stream ends with an error event');
		assert.equal(last.json.error.code, 'shutting_down');
		await px.exitsCleanly(10000, 'exit after the second SIGTERM');
	} finally {
		release();
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
		await up.close();
	}
});
