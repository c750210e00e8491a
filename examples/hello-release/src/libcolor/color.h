#ifndef COLOR_H
#define COLOR_H
/* Wraps text in an ANSI colour escape when enabled. */
void color_print(const char *text, int enabled);
#endif
