/*
 * log.h: leveled logging to stderr. Each line carries a UTC timestamp, the process name and pid,
 * and the level, so the interleaved output of orchd and its workers stays readable:
 *   2026-11-22T07:40:01.123Z orchd[4242] info: worker 1 ready (pid 4250)
 * Thread-safe (one write(2) per line). Not for program output: that goes to stdout.
 */
#ifndef LLORCH_LOG_H
#define LLORCH_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the name shown in each line (copied) and the most verbose level printed. Call once in main.
 */
void log_init(const char *name, enum log_level level);

/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int log_level_parse(const char *s);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
