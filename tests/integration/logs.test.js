'use strict';
// The access log (text and json, stderr, a file, off), the error log in a
// file, SIGUSR1 reopening both after logrotate renamed them, and no key or
// token in anything logged.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const h = require('../lib/harness');

const sha = (s) => crypto.createHash('sha256').update(s).digest('hex');
const bearer = (t) => ({ authorization: `Bearer ${t}` });

const TEXT_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) req=(\d+) client=(\S+) method=(\S+) path=(\S+) route=(create|response|input_items|cancel|other|none) status=(\d{3}) cache=(hit|miss|coalesced|bypass) upstream_status=(\S+) upstream_time=(\S+) bytes=(\d+) request_id=(\S+) time=(\d+\.\d{6})$/;
const JSON_KEYS = ['bytes', 'cache', 'client', 'duration', 'method', 'path', 'req', 'request_id', 'route', 'status', 'time', 'upstream_status', 'upstream_time'];

/* The text access-log lines of some output, parsed. */
function textLines(s) {
	const out = [];
	for (const line of s.split('\n')) {
		if (!/ client=\S+ method=/.test(line)) continue;
		const m = TEXT_RE.exec(line);
		assert.ok(m, `an access log line in the documented text format: ${JSON.stringify(line)}`);
		out.push({
			line, time: m[1], req: Number(m[2]), client: m[3], method: m[4], path: m[5], route: m[6], status: Number(m[7]), cache: m[8],
			upstream_status: m[9], upstream_time: m[10], bytes: Number(m[11]), request_id: m[12], duration: Number(m[13]),
		});
	}
	return out;
}

/* The json access-log lines of some output, parsed. */
function jsonLines(s) {
	return s.split('\n').filter((l) => l.startsWith('{')).map((l) => {
		let j;
		assert.doesNotThrow(() => { j = JSON.parse(l); }, `a JSON line: ${l}`);
		assert.deepEqual(Object.keys(j).sort(), JSON_KEYS, `the documented keys: ${l}`);
		return j;
	});
}

const readOr = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');

/*
 * After SIGUSR1, once the daemon has reopened its log files: each of files
 * (moved away before the signal) exists again, so the main loop is inside
 * or past the reopen; an admin answer, which the same loop gives, comes
 * after the reopen's end.
 */
async function reopened(px, files) {
	await h.until(() => files.every((f) => fs.existsSync(f)), { what: `${files.join(' and ')} made anew` });
	const r = await h.request(`${px.adminUrl}/healthz`, { headers: { authorization: null }, agent: false });
	assert.equal(r.status, 200);
}

/*
 * The daemon with error_log set to a file: "listening on" still comes on
 * stderr (startProxy() waits for it), then the file takes stderr's place.
 */
async function startWithErrorLog({ upstream, config }) {
	const px = await h.startProxy({ upstream, config });
	px.kill = () => {
		if (px.proc.exitCode === null && px.proc.signalCode === null) px.proc.kill('SIGKILL');
	};
	return px;
}

test('text access log: a miss then a hit of one id, with upstream status, bytes and request id', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const t0 = Date.now();
		const miss = await h.request(px.url + p);
		h.assertXCache(miss, 'MISS', 'first GET');
		const hit = await h.request(px.url + p);
		h.assertXCache(hit, 'HIT', 'second GET');
		const nf = await h.request(`${px.url}/nothing`);
		assert.equal(nf.status, 404);
		const lines = await h.until(() => {
			const l = textLines(px.stderr());
			return l.length >= 3 ? l : null;
		}, { what: 'three access log lines' });
		assert.equal(lines.length, 3, lines.map((l) => l.line).join('\n'));

		const m = lines.find((l) => l.cache === 'miss');
		const k = lines.find((l) => l.cache === 'hit');
		const b = lines.find((l) => l.cache === 'bypass');
		assert.ok(m && k && b, lines.map((l) => l.line).join('\n'));
		for (const l of [m, k]) {
			assert.equal(l.method, 'GET');
			assert.equal(l.path, p);
			assert.equal(l.route, 'response');
			assert.equal(l.status, 200);
			assert.equal(l.client, '-', 'no [client] sections: no client name');
			const ts = Date.parse(l.time);
			assert.ok(ts >= t0 - 1000 && ts <= Date.now() + 1000, `time ${l.time} is now`);
		}
		assert.equal(m.upstream_status, '200', 'the miss went upstream');
		assert.match(m.upstream_time, /^\d+\.\d{6}$/);
		assert.ok(m.duration >= Number(m.upstream_time), `time ${m.duration} covers upstream_time ${m.upstream_time}`);
		assert.equal(m.bytes, miss.raw.length, 'bytes is the body length');
		assert.equal(m.request_id, miss.headers['x-request-id'], 'request_id is the X-Request-Id the client got');

		assert.equal(k.upstream_status, '-', 'the hit never went upstream');
		assert.equal(k.upstream_time, '-');
		assert.equal(k.bytes, hit.raw.length);
		assert.equal(k.request_id, hit.headers['x-request-id']);

		assert.equal(b.path, '/nothing');
		assert.equal(b.route, 'none', 'no route');
		assert.equal(b.status, 404);
		assert.equal(b.upstream_status, '-');
		assert.equal(b.bytes, nf.raw.length);
		assert.equal(b.request_id, '-');

		// A stream: bytes is what was relayed.
		const s = await h.openSSE(`${px.url}/v1/responses`, { method: 'POST', body: { model: 'gpt-4o', input: 's', stream: true } });
		const { text } = await s.done;
		const sl = await h.until(() => textLines(px.stderr()).find((l) => l.method === 'POST'), { what: 'the stream\'s line' });
		assert.equal(sl.path, '/v1/responses');
		assert.equal(sl.route, 'create');
		assert.equal(sl.status, 200);

		// A forwarded path is named as the metrics name it: other.
		await h.request(`${px.url}/v1/models`);
		const fl = await h.until(() => textLines(px.stderr()).find((l) => l.path === '/v1/models'), { what: 'the forwarded line' });
		assert.equal(fl.route, 'other');
		assert.equal(fl.upstream_status, '404', 'it went upstream (the mock does not know it)');
		assert.equal(sl.cache, 'bypass');
		assert.equal(sl.upstream_status, '200');
		assert.equal(sl.bytes, Buffer.byteLength(text), 'a stream\'s bytes are the bytes relayed');
		assert.equal(sl.request_id, s.headers['x-request-id']);
	});
});

test('text access log escapes quotes and backslashes in the path: one line, fields intact', async () => {
	await h.withStack({}, async ({ px }) => {
		const r = await h.rawRequest(px.port, 'GET /a"b\\c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
		assert.equal(r.status, 404);
		const l = await h.until(() => textLines(px.stderr())[0], { what: 'the line' });
		assert.equal(l.path, '/a\\x22b\\x5cc');
		assert.equal(l.status, 404);
	});
});

test('every method is logged as itself, those the router refuses too', async () => {
	await h.withStack({}, async ({ px }) => {
		for (const m of ['TRACE', 'CONNECT', 'OPTIONS', 'PUT', 'PATCH']) {
			const r = await h.rawRequest(px.port, `${m} /v1/responses/resp_1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
			assert.ok(r.status >= 400, `${m}: ${r.status}`);
		}
		const lines = await h.until(() => {
			const l = textLines(px.stderr());
			return l.length >= 5 && l;
		}, { what: 'five lines' });
		assert.deepEqual(lines.map((l) => l.method), ['TRACE', 'CONNECT', 'OPTIONS', 'PUT', 'PATCH']);
	});
});

test('json access log: one JSON object per line with the same facts', async () => {
	await h.withStack({ proxy: { config: '[log]\nlog_format = json\n' } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		const miss = await h.request(px.url + p);
		const hit = await h.request(px.url + p);
		h.assertXCache(hit, 'HIT', 'second GET');
		const lines = await h.until(() => {
			const l = jsonLines(px.stderr());
			return l.length >= 2 ? l : null;
		}, { what: 'two JSON lines' });
		assert.equal(lines.length, 2);
		assert.doesNotMatch(px.stderr(), / client=\S+ method=/, 'no text lines in json mode');
		const m = lines.find((l) => l.cache === 'miss');
		const k = lines.find((l) => l.cache === 'hit');
		assert.ok(m && k, JSON.stringify(lines));
		for (const [l, r] of [[m, miss], [k, hit]]) {
			assert.match(l.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
			assert.equal(l.client, null);
			assert.equal(l.method, 'GET');
			assert.equal(l.path, p);
			assert.equal(l.status, 200);
			assert.equal(l.bytes, r.raw.length);
			assert.equal(l.request_id, r.headers['x-request-id']);
			assert.equal(typeof l.duration, 'number');
		}
		assert.equal(m.upstream_status, 200);
		assert.equal(typeof m.upstream_time, 'number');
		assert.ok(m.upstream_time > 0 && m.upstream_time <= m.duration);
		assert.equal(k.upstream_status, null);
		assert.equal(k.upstream_time, null);
	});
});

/* One raw request, bytes as given; resolves when the server closes. */
function rawBytes(port, buf) {
	return new Promise((resolve, reject) => {
		const s = net.connect(port, '127.0.0.1');
		const chunks = [];
		const t = setTimeout(() => { s.destroy(); reject(new Error('no close within 5 s')); }, 5000);
		s.on('data', (d) => chunks.push(d));
		s.on('error', (e) => { clearTimeout(t); reject(e); });
		s.on('close', () => { clearTimeout(t); resolve(Buffer.concat(chunks).toString('latin1')); });
		s.write(buf);
	});
}

test('a request whose path, or whose upstream X-Request-Id, is not UTF-8 still gets its access log line (text and json)', async () => {
	for (const fmt of ['text', 'json']) {
		let daemon;
		await h.withStack({ proxy: { config: `[log]\nlog_format = ${fmt}\n` } }, async ({ up, px }) => {
			daemon = px;
			const req = Buffer.concat([Buffer.from('GET /v1/responses/resp_'), Buffer.from([0xff, 0xfe]),
				Buffer.from(' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]);
			const r = await rawBytes(px.port, req);
			assert.match(r, /^HTTP\/1\.1 400 /, 'answered');
			// The upstream's request id is sent on as it came, bytes and all.
			const id = up.seed();
			up.override = (q, res) => {
				up.sendJSON(res, 200, up.responseObject(up.get(id)), { 'x-request-id': 'req_\u00ff\u00fe' });
				return true;
			};
			const g = await h.request(`${px.url}/v1/responses/${id}`);
			assert.equal(g.status, 200);
			assert.equal(Buffer.from(g.headers['x-request-id'], 'latin1').toString('hex'), Buffer.from('req_\xff\xfe', 'latin1').toString('hex'));
			up.override = null;
		});
		// Once the daemon has exited, its access log's writer has written all.
		const out = daemon.stderr();
		const lines = fmt === 'json' ? jsonLines(out) : textLines(out);
		assert.equal(lines.length, 2, `${fmt}: every request has its access log line (these two leave no trace):\n${out}`);
	}
});

test('[client] sections: the client\'s name is logged; no key or token appears in the log, in either format', async () => {
	const dir = h.tmpdir();
	const keyFile = path.join(dir, 'openai.key');
	fs.writeFileSync(keyFile, 'sk-upstream-LOGSECRET\n', { mode: 0o600 });
	const secrets = ['sk-upstream-LOGSECRET', 'tok-alice-LOGSECRET', 'tok-eve-LOGSECRET', 'LOGSECRET'];
	const base = `[credential main]\nkey_file = ${keyFile}\n\n[client alice]\ntoken_sha256 = ${sha('tok-alice-LOGSECRET')}\ncredential = main\n`;
	for (const fmt of ['text', 'json']) {
		const config = `${base}\n[log]\nlevel = debug\nlog_format = ${fmt}\n`;
		let daemon;
		await h.withStack({ upstream: { requireKey: 'sk-upstream-LOGSECRET' }, proxy: { config } }, async ({ up, px }) => {
			daemon = px;
			const id = up.seed();
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice-LOGSECRET') })).status, 200);
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-alice-LOGSECRET') })).status, 200);
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('tok-eve-LOGSECRET') })).status, 401);
			assert.equal((await h.request(`${px.url}/v1/responses/${id}`, { headers: bearer('sk-upstream-LOGSECRET') })).status, 401);
			const c = await h.request(`${px.url}/v1/responses`, { method: 'POST', headers: bearer('tok-alice-LOGSECRET'), body: { model: 'gpt-4o', input: 'x' } });
			assert.equal(c.status, 200);
			const lines = await h.until(() => {
				const l = fmt === 'json' ? jsonLines(px.stderr()) : textLines(px.stderr());
				return l.length >= 5 ? l : null;
			}, { what: 'five access log lines' });
			const name = (l) => (fmt === 'json' ? l.client : l.client === '-' ? null : l.client);
			assert.deepEqual(lines.filter((l) => l.status === 200).map(name), ['alice', 'alice', 'alice'], `${fmt}: alice's requests carry her name`);
			assert.deepEqual(lines.filter((l) => l.status === 401).map(name), [null, null], `${fmt}: unknown tokens have no name`);
			process.kill(px.pid, 'SIGHUP');
			await h.until(async () => (await h.metric(px, 'respcache_config_reloads_total', '{result="ok"}')) === 1, { what: 'the reload' });
		});
		// All it wrote, to its exit.
		const all = daemon.stderr() + daemon.stdout();
		assert.match(all, /debug/, 'the debug log was captured');
		for (const s of secrets) assert.ok(!all.includes(s), `${fmt}: "${s}" leaked into the log`);
		assert.ok(!all.includes(sha('tok-eve-LOGSECRET')), `${fmt}: an unknown token's hash leaked into the log`);
	}
});

test('access_log = off: no access log line at all; the error log still works', async () => {
	let daemon;
	await h.withStack({ proxy: { config: '[log]\naccess_log = off\nlevel = debug\n' } }, async ({ up, px }) => {
		daemon = px;
		const id = up.seed();
		await h.request(`${px.url}/v1/responses/${id}`);
		await h.request(`${px.url}/v1/responses/${id}`);
		await h.request(`${px.url}/nothing`);
		process.kill(px.pid, 'SIGUSR1');
	});
	// After the exit, all is written that ever will be.
	const err = daemon.stderr();
	assert.match(err, /respcache\[info\]: log files reopened/, 'SIGUSR1 with no log file to reopen');
	assert.match(err, /respcache\[debug\]/, 'the error log is on');
	assert.doesNotMatch(err, / method=|"method"/, 'no access log line');
});

test('a client that leaves before its answer is logged with status 499', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const held = [];
		up.override = (req, res) => { held.push(res); return true; };
		const req = http.get(`${px.url}/v1/responses/${id}`, { agent: false, headers: { authorization: h.DEFAULT_AUTH } });
		req.on('error', () => {});
		await h.until(() => held.length === 1, { what: 'the GET to reach the upstream' });
		req.destroy();
		const l = await h.until(() => textLines(px.stderr())[0], { what: 'the line of the client that left' });
		assert.equal(l.status, 499);
		assert.equal(l.path, `/v1/responses/${id}`);
		assert.equal(l.upstream_status, '-', 'no upstream answer yet');
		assert.equal(l.bytes, 0);
		assert.equal(textLines(px.stderr()).length, 1, 'one line');
	});
});

test('each request has its own serial number, and an error line about a request names the same one as its access line', async () => {
	await h.withStack({}, async ({ up, px }) => {
		const id = up.seed();
		const p = `/v1/responses/${id}`;
		assert.equal((await h.request(px.url + p)).status, 200);
		// The upstream cuts the next exchange: the proxy answers 502 and says why in its error log.
		up.override = (req, res) => { res.socket.destroy(); return true; };
		const cut = await h.request(`${px.url}/v1/responses/${up.seed()}`);
		assert.equal(cut.status, 502, cut.body);
		const lines = await h.until(() => {
			const l = textLines(px.stderr());
			return l.length >= 2 ? l : null;
		}, { what: 'two access log lines' });
		assert.equal(lines.length, 2);
		assert.notEqual(lines[0].req, lines[1].req, 'two requests, two serials');
		const warn = px.stderr().split('\n').find((l) => /respcache\[warn\]: req=\d+: upstream GET /.test(l));
		assert.ok(warn, `an error line about the failed request: ${px.stderr()}`);
		assert.equal(Number(/req=(\d+)/.exec(warn)[1]), lines[1].req, 'the error line names the 502\'s serial');
		assert.equal(lines[1].status, 502);
	});
});

test('access_log = FILE: lines go to the file; after a rename, SIGUSR1 makes a new file at the path', async () => {
	const dir = h.tmpdir();
	const file = path.join(dir, 'access.log');
	await h.withStack({ proxy: { config: `[log]\naccess_log = ${file}\n` } }, async ({ up, px }) => {
		const p = (id) => `/v1/responses/${id}`;
		const [a, b, c] = [up.seed(), up.seed(), up.seed()];
		await h.request(px.url + p(a));
		await h.until(() => textLines(readOr(file)).length === 1, { what: 'the first line in the file' });
		assert.equal(textLines(px.stderr()).length, 0, 'nothing on stderr');
		assert.equal(fs.statSync(file).mode & 0o007, 0, 'the access log is not world-readable');

		// logrotate renames the file: the daemon writes on into it until told.
		fs.renameSync(file, `${file}.1`);
		await h.request(px.url + p(b));
		await h.until(() => textLines(readOr(`${file}.1`)).length === 2, { what: 'the second line in the renamed file' });
		assert.equal(fs.existsSync(file), false);

		process.kill(px.pid, 'SIGUSR1');
		await reopened(px, [file]);
		await h.request(px.url + p(c));
		await h.until(() => textLines(readOr(file)).length === 1, { what: 'a line in a new file at the path' });

		const old = textLines(readOr(`${file}.1`)).map((l) => l.path);
		const now = textLines(readOr(file)).map((l) => l.path);
		assert.deepEqual(old, [p(a), p(b)], 'the old file keeps the old lines');
		assert.deepEqual(now, [p(c)], 'the new file has only the new line');
		assert.equal(textLines(px.stderr()).length, 0, 'still nothing on stderr');
	});
});

test('error_log = FILE gets the error log (and the access log on stderr); SIGUSR1 reopens both files', async () => {
	const up = await h.startUpstream();
	const dir = h.tmpdir();
	const errorLog = path.join(dir, 'error.log');
	const accessLog = path.join(dir, 'access.log');
	const variants = [
		{ what: 'error_log and access_log in two files', access: accessLog, config: `[log]\nerror_log = ${errorLog}\naccess_log = ${accessLog}\n` },
		{ what: 'error_log in a file, access_log on stderr', access: errorLog, config: `[log]\nerror_log = ${errorLog}\n` },
	];
	try {
		for (const v of variants) {
			for (const f of [errorLog, accessLog, `${errorLog}.1`, `${accessLog}.1`]) fs.rmSync(f, { force: true });
			const px = await startWithErrorLog({ upstream: up.url, config: v.config });
			try {
				const id = up.seed();
				await h.request(`${px.url}/v1/responses/${id}`);
				await h.until(() => textLines(readOr(v.access)).length === 1, { what: `${v.what}: the first access line` });
				assert.match(readOr(errorLog), /respcache\[info\]: respcache \d+\.\d+\.\d+: upstream/, `${v.what}: the start-up line is in the error log`);
				assert.match(px.stderr(), /respcache: listening on/, `${v.what}: the listening line is on stderr`);
				if (v.access !== errorLog) assert.equal(textLines(readOr(errorLog)).length, 0, `${v.what}: no access line in the error log`);

				fs.renameSync(errorLog, `${errorLog}.1`);
				if (v.access !== errorLog) fs.renameSync(accessLog, `${accessLog}.1`);
				process.kill(px.pid, 'SIGUSR1');
				await reopened(px, v.access === errorLog ? [errorLog] : [errorLog, accessLog]);
				assert.match(readOr(errorLog), /respcache\[info\]: log files reopened/, `${v.what}: "log files reopened" in a new error log`);
				await h.request(`${px.url}/v1/responses/${id}`);
				await h.until(() => textLines(readOr(v.access)).length === 1, { what: `${v.what}: the hit's line in the new file` });
				assert.equal(textLines(readOr(v.access))[0].cache, 'hit');
				assert.equal(textLines(readOr(`${v.access}.1`)).length, 1, `${v.what}: the old file keeps the miss's line only`);
				assert.equal(textLines(readOr(`${v.access}.1`))[0].cache, 'miss');
				assert.doesNotMatch(readOr(`${errorLog}.1`), /log files reopened/, `${v.what}: the old error log never got the reopen line`);
				assert.doesNotMatch(readOr(errorLog), /upstream http/, `${v.what}: the new error log has only what came after`);
				assert.doesNotMatch(px.stderr(), /respcache\[|client=/, `${v.what}: after start-up, nothing more on the real stderr`);
				await px.stop();
				assert.match(readOr(errorLog), /respcache\[info\]: stopped/, `${v.what}: "stopped" went to the new error log`);
				assert.doesNotMatch(readOr(errorLog) + readOr(`${errorLog}.1`), h.SANITIZER_RE);
			} finally {
				px.kill();
			}
		}
	} finally {
		await up.close();
	}
});

test('a log reader that stops reading (a stalled journald pipe) does not stall requests', async () => {
	await h.withStack({ proxy: { args: ['--workers', '1'] } }, async ({ up, px }) => {
		const id = up.seed();
		const p = `${px.url}/v1/responses/${id}`;
		h.assertXCache(await h.request(p), 'MISS', 'first GET');
		// Stop reading the daemon's stderr: the pipe (64 KiB) fills after a
		// few hundred access lines, and a write to it would block.
		px.proc.stderr.pause();
		const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
		try {
			const t0 = Date.now();
			for (let round = 0; round < 30; round++) {
				const rs = await Promise.all(Array.from({ length: 100 }, () => h.request(p, { agent })));
				for (const r of rs) assert.equal(r.status, 200);
			}
			const ms = Date.now() - t0;
			// 3,000 access lines (~200 B each) are far more than the pipe holds.
			assert.ok(ms < 20000, `3,000 hits with the log stalled took ${ms} ms`);
		} finally {
			agent.destroy();
			px.proc.stderr.resume();
		}
		await h.until(() => textLines(px.stderr()).length >= 3001, { timeoutMs: 10000, what: 'every line, once the reader is back' });
	});
});

test('access lines and error log lines on one stderr never break into each other', async () => {
	// Debug level: the workers log several lines a request while the access
	// log's writer thread writes its lines to the same descriptor.
	await h.withStack({ proxy: { config: '[log]\nlevel = debug\n', args: ['--workers', '2'] } }, async ({ up, px }) => {
		const ids = Array.from({ length: 20 }, () => up.seed());
		const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
		try {
			for (let round = 0; round < 10; round++) {
				await Promise.all(ids.flatMap((id) => [1, 2, 3, 4, 5].map(() =>
					h.request(`${px.url}/v1/responses/${id}`, { agent }))));
			}
		} finally {
			agent.destroy();
		}
		await h.until(() => textLines(px.stderr()).length >= 1000, { timeoutMs: 10000, what: '1,000 access lines' });
		const ERR_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z respcache\[(error|warn|info|debug)\]: /;
		const bad = px.stderr().split('\n').filter((l) => l !== '' && !l.startsWith('respcache: ') &&
			!ERR_RE.test(l) && !TEXT_RE.test(l));
		assert.deepEqual(bad.slice(0, 3), [], `${bad.length} lines are neither an access line nor an error log line`);
		for (const l of px.stderr().split('\n')) {
			if (ERR_RE.test(l)) assert.doesNotMatch(l.replace(ERR_RE, ''), /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z client=/, 'an access line inside an error line');
		}
	});
});
