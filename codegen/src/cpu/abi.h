/* kiln CPU kernel ABI. Every generated source starts with this header (verbatim).
 *
 * A generated kernel NAME exports:
 *   int32_t kiln_NAME(const kiln_args *args, int64_t begin, int64_t end, kiln_error *err);
 * which runs the program instances with linear index begin <= p < end, where
 *   p = (pid_z * grid[1] + pid_y) * grid[0] + pid_x   (x fastest, as in the interpreter).
 * It returns 0 on success. On the first failure it fills *err, stops, and returns err->code.
 * Callers split [0, grid[0]*grid[1]*grid[2]) into ranges and run them on a thread pool.
 */
#include <stdint.h>
#include <stddef.h>

typedef union {
    int32_t i32;
    uint32_t u32;
    float f32;
    uint16_t f16;  /* IEEE binary16 bits */
    uint16_t bf16; /* bfloat16 bits */
    int8_t i8;
    uint8_t u8;
    uint8_t b;     /* bool: 0 or 1 */
} kiln_scalar;

typedef struct {
    /* Indexed by parameter position in the kernel signature; entries of the other kind are
     * unused (NULL / 0). Buffers hold elements in the parameter's dtype (f16/bf16 as uint16_t
     * bits, bool as uint8_t); lengths are in elements. */
    void *const *buffers;
    const int64_t *buffer_lens;
    const kiln_scalar *scalars;
    int32_t grid[3];
} kiln_args;

enum {
    KILN_OK = 0,
    KILN_OUT_OF_BOUNDS = 1,   /* inst: the load/store/atomic; index: the lane's offset; len */
    KILN_DIVISION_BY_ZERO = 2,/* inst: the div/rem */
    KILN_BAD_STEP = 3,        /* inst: the for; index: the step */
};

typedef struct {
    int32_t code;
    int32_t inst;  /* instruction id in the kernel's arena */
    int32_t param; /* buffer parameter for KILN_OUT_OF_BOUNDS, else -1 */
    int32_t _pad;
    int64_t index;
    int64_t len;
    int64_t program; /* linear program index */
} kiln_error;
