#include <stdlib.h>
#include <string.h>
#include "greet.h"
#include "color.h"

int main(int argc, char **argv) {
    char buf[256];
    const char *name = argc > 1 ? argv[1] : "world";
    const char *color = getenv("GREETER_COLOR");
    greet(buf, sizeof buf, name);
    color_print(buf, color != NULL && strcmp(color, "1") == 0);
    return 0;
}
