/*
 * json-field.c: prints one field of a JSON-lines file, for shell tests (jq is not installed and
 * python is not on CI). `json-field FILE KEY [ID]`: FILE ("-" = stdin) holds one JSON object per
 * line; the object used is the one whose "id" is ID, else the first. An array of numbers prints as
 * "1,2,3", a string as its bytes, a number or boolean as itself, each followed by a newline.
 * Exit 1 when the line or key is missing or the value is something else (an object...).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
print_value(const json_t *v)
{
    size_t i;
    json_t *e;

    switch (json_typeof(v)) {
    case JSON_ARRAY:
        json_array_foreach(v, i, e)
        {
            if (!json_is_number(e))
                return 1;
            if (json_is_integer(e))
                printf("%s%lld", i ? "," : "", (long long)json_integer_value(e));
            else
                printf("%s%.9g", i ? "," : "", json_real_value(e));
        }
        break;
    case JSON_STRING:
        fwrite(json_string_value(v), 1, json_string_length(v), stdout);
        break;
    case JSON_INTEGER:
        printf("%lld", (long long)json_integer_value(v));
        break;
    case JSON_REAL:
        printf("%.9g", json_real_value(v));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        printf("%s", json_is_true(v) ? "true" : "false");
        break;
    default:
        return 1;
    }
    printf("\n");
    return 0;
}

int
main(int argc, char **argv)
{
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    int status = 1;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: json-field FILE KEY [ID]\n");
        return 2;
    }
    f = strcmp(argv[1], "-") == 0 ? stdin : fopen(argv[1], "r");
    if (f == NULL) {
        fprintf(stderr, "json-field: cannot open %s\n", argv[1]);
        return 2;
    }
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *o = json_loads(line, JSON_ALLOW_NUL, &e);
        const json_t *id = json_object_get(o, "id");

        if (o == NULL)
            continue;
        if (argc == 3 || (json_is_string(id) && strcmp(json_string_value(id), argv[3]) == 0)) {
            const json_t *v = json_object_get(o, argv[2]);

            status = v != NULL ? print_value(v) : 1;
            if (v == NULL)
                fprintf(stderr, "json-field: no key '%s'\n", argv[2]);
            json_decref(o);
            break;
        }
        json_decref(o);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return status;
}
