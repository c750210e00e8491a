#ifndef GREET_H
#define GREET_H
/* Writes "hello, <name>" into buf (at most len bytes); returns the length written. */
int greet(char *buf, int len, const char *name);
#endif
