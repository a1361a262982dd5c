/*
 * log.h - leveled logging to stderr, or a file in its place.
 *
 * The macros test the level before they evaluate their arguments, so a
 * debug line on the hit path costs one comparison when debug is off.
 * Never pass a key or token to any of them.
 */
#ifndef RC_LOG_H
#define RC_LOG_H

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

extern int log_level_now;

void	log_init(int level);
/* "error", "warn", "info" or "debug" to its level; -1 if unknown. */
int	log_level_parse(const char *);
/*
 * Where the error log goes: "stderr", or a file, opened now (-1 and
 * *cause on failure) and put in stderr's place by log_start(), once
 * start-up has said what it had to say on stderr.
 */
int	log_open(const char *where, char **cause);
void	log_start(void);
/* A log file opened to append to (fd), or -1 and *cause "what path: why". */
int	log_open_append(const char *what, const char *path, char **cause);
/*
 * Open path again and put it in the place of descriptor target, so that
 * every write goes wholly to the old file or wholly to the new one.
 */
int	log_reopen_file(const char *what, const char *path, int target,
	    char **cause);
/* SIGUSR1: open the file again, after logrotate moved it. */
int	log_reopen(char **cause);
void	log_write(int level, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));
/*
 * Log at LOG_ERR and end the process with status 1, from any thread:
 * _exit(), so that no atexit handler or destructor runs while other
 * threads still use what it would tear down.
 */
void	fatalx(const char *fmt, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * A line that may repeat fast (one per failed accept(), say) is written
 * at most once a second per struct log_limit; the lines held back are
 * counted, and the next line written says how many: "... (N more in the
 * last 1.2 s)".  The count is told only when a line gets through, and
 * those held back may have said other things (another worker, another
 * error) than the one written.  Safe from any thread; a log_limit is
 * zeroed (static, or LOG_LIMIT_INITIALIZER) before its first use.
 */
struct log_limit {
	long long	last_ms;	/* CLOCK_MONOTONIC of the last line */
	unsigned long long quiet;	/* lines held back since */
};
#define LOG_LIMIT_INITIALIZER	{ 0, 0 }
void	log_write_limited(struct log_limit *, int level, const char *fmt,
	    ...) __attribute__((format(printf, 3, 4)));

#define log_at(l, ...) do {						\
	if ((l) <= __atomic_load_n(&log_level_now, __ATOMIC_RELAXED))	\
		log_write((l), __VA_ARGS__);				\
} while (0)
#define log_err(...)	log_at(LOG_ERR, __VA_ARGS__)
#define log_warnx(...)	log_at(LOG_WARN, __VA_ARGS__)
#define log_info(...)	log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	log_at(LOG_DEBUG, __VA_ARGS__)
#define log_limit_at(lim, l, ...) do {					\
	if ((l) <= __atomic_load_n(&log_level_now, __ATOMIC_RELAXED))	\
		log_write_limited((lim), (l), __VA_ARGS__);		\
} while (0)
#define log_warnx_limited(lim, ...)	log_limit_at((lim), LOG_WARN, __VA_ARGS__)

#endif
