#include <stdio.h>
#include "color.h"

void color_print(const char *text, int enabled) {
    if (enabled) {
        printf("\033[32m%s\033[0m\n", text);
    } else {
        printf("%s\n", text);
    }
}
