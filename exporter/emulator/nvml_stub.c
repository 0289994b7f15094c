/*
 * A scriptable stand-in for libnvidia-ml.so.1, for running the node role without a GPU.
 *
 * Compiled against NVIDIA's own nvml.h (the nvidia-nvml-dev wheel), so every struct the real
 * pynvml binding reads has the driver's layout. The devices come from the text file named by
 * $NVML_STUB_CONFIG, re-read whenever it changes (see exporter/emulator/nvml.py, which writes it):
 *
 *   driver 550.54.15
 *   nodriver                                  nvmlInit fails: the driver is not loaded
 *   gpu uuid=GPU-... name="NVIDIA A100-SXM4-40GB" pci=00000000:07:00.0 util=45 memutil=30
 *       mem_used=BYTES mem_total=BYTES power_mw=N energy_mj=N temp=N sm_mhz=N
 *       ecc_corrected=N ecc_uncorrected=N throttle=BITS lost=0|1 hang_ms=N unsupported=util,power,...
 *   mig parent=INDEX uuid=MIG-... name="NVIDIA A100-SXM4-40GB MIG 1g.5gb" gi=N ci=N mem_used=N mem_total=N
 *   xid gpu=INDEX code=N                      one XID event, delivered once to each event set
 *   proc gpu=INDEX pid=N mem=BYTES            a compute process and its device memory
 */
#include <nvml.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_GPUS 64
#define MAX_MIGS 256
#define MAX_XIDS 4096
#define MAX_PROCS 1024

enum {
    U_UTIL = 1, U_POWER = 2, U_ENERGY = 4, U_TEMP = 8, U_CLOCK = 16, U_ECC = 32,
    U_THROTTLE = 64, U_MEMORY = 128, U_PROCS = 256, U_EVENTS = 512,
};
/* What NVML does not report for a MIG device: these belong to the physical GPU. */
#define MIG_UNSUPPORTED (U_UTIL | U_POWER | U_ENERGY | U_TEMP | U_CLOCK | U_ECC | U_THROTTLE | U_PROCS | U_EVENTS)

struct nvmlDevice_st {
    int is_mig, index, parent, gi, ci, lost, hang_ms, children[8], nchildren;
    char uuid[96], name[96], pci[32];
    unsigned util, memutil, power, temp, sm, unsupported;
    unsigned long long mem_used, mem_total, energy, ecc_corrected, ecc_uncorrected, throttle;
};

struct nvmlEventSet_st {
    int delivered;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvmlDevice_st gpus[MAX_GPUS], migs[MAX_MIGS];
static int n_gpus, n_migs, n_xids, n_procs, no_driver, initialised;
static int xid_gpu[MAX_XIDS], proc_gpu[MAX_PROCS];
static unsigned long long xid_code[MAX_XIDS], proc_mem[MAX_PROCS];
static unsigned proc_pid[MAX_PROCS];
static char driver[64] = "550.54.15";
static struct timespec loaded_mtime;
static ino_t loaded_ino;
static off_t loaded_size = -1;

static unsigned parse_unsupported(const char *v) {
    static const struct { const char *name; unsigned bit; } names[] = {
        {"util", U_UTIL}, {"power", U_POWER}, {"energy", U_ENERGY}, {"temp", U_TEMP}, {"clock", U_CLOCK},
        {"ecc", U_ECC}, {"throttle", U_THROTTLE}, {"memory", U_MEMORY}, {"procs", U_PROCS}, {"events", U_EVENTS},
    };
    unsigned bits = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *hit = strstr(v, names[i].name);
        if (hit) bits |= names[i].bit;
    }
    return bits;
}

/* Next `key=value` token of a line; values may be double-quoted. Returns 0 at the end. */
static int next_token(char **cursor, char **key, char **value) {
    char *p = *cursor;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p || *p == '\n') return 0;
    *key = p;
    while (*p && *p != '=' && *p != ' ' && *p != '\n') p++;
    if (*p != '=') { *value = p; if (*p) *p++ = 0; *cursor = p; return 1; }
    *p++ = 0;
    if (*p == '"') {
        *value = ++p;
        while (*p && *p != '"') p++;
    } else {
        *value = p;
        while (*p && *p != ' ' && *p != '\n') p++;
    }
    if (*p) *p++ = 0;
    *cursor = p;
    return 1;
}

static void set_field(struct nvmlDevice_st *d, const char *k, const char *v) {
    unsigned long long n = strtoull(v, NULL, 0);
    if (!strcmp(k, "uuid")) snprintf(d->uuid, sizeof d->uuid, "%s", v);
    else if (!strcmp(k, "name")) snprintf(d->name, sizeof d->name, "%s", v);
    else if (!strcmp(k, "pci")) snprintf(d->pci, sizeof d->pci, "%s", v);
    else if (!strcmp(k, "util")) d->util = (unsigned)n;
    else if (!strcmp(k, "memutil")) d->memutil = (unsigned)n;
    else if (!strcmp(k, "mem_used")) d->mem_used = n;
    else if (!strcmp(k, "mem_total")) d->mem_total = n;
    else if (!strcmp(k, "power_mw")) d->power = (unsigned)n;
    else if (!strcmp(k, "energy_mj")) d->energy = n;
    else if (!strcmp(k, "temp")) d->temp = (unsigned)n;
    else if (!strcmp(k, "sm_mhz")) d->sm = (unsigned)n;
    else if (!strcmp(k, "ecc_corrected")) d->ecc_corrected = n;
    else if (!strcmp(k, "ecc_uncorrected")) d->ecc_uncorrected = n;
    else if (!strcmp(k, "throttle")) d->throttle = n;
    else if (!strcmp(k, "lost")) d->lost = (int)n;
    else if (!strcmp(k, "hang_ms")) d->hang_ms = (int)n;
    else if (!strcmp(k, "unsupported")) d->unsupported = parse_unsupported(v);
    else if (!strcmp(k, "parent")) d->parent = (int)n;
    else if (!strcmp(k, "gi")) d->gi = (int)n;
    else if (!strcmp(k, "ci")) d->ci = (int)n;
}

static void load(const char *path) {
    FILE *f = fopen(path, "r");
    char line[1024];
    int gpu_count = 0, mig_count = 0;
    if (!f) return;
    no_driver = 0;
    n_xids = n_procs = 0;
    for (int i = 0; i < MAX_GPUS; i++) gpus[i].nchildren = 0;
    while (fgets(line, sizeof line, f)) {
        char *cursor = line, *word, *k, *v;
        if (!next_token(&cursor, &word, &v) || word[0] == '#') continue;
        if (!strcmp(word, "nodriver")) { no_driver = 1; continue; }
        if (!strcmp(word, "driver")) {
            if (next_token(&cursor, &k, &v)) snprintf(driver, sizeof driver, "%s", k);
            continue;
        }
        if (!strcmp(word, "gpu") && gpu_count < MAX_GPUS) {
            struct nvmlDevice_st *d = &gpus[gpu_count];
            memset(d, 0, sizeof *d);
            d->index = gpu_count++;
            d->parent = -1;
            while (next_token(&cursor, &k, &v)) set_field(d, k, v);
        } else if (!strcmp(word, "mig") && mig_count < MAX_MIGS) {
            struct nvmlDevice_st *d = &migs[mig_count];
            memset(d, 0, sizeof *d);
            d->is_mig = 1;
            d->index = mig_count++;
            while (next_token(&cursor, &k, &v)) set_field(d, k, v);
            if (d->parent >= 0 && d->parent < gpu_count && gpus[d->parent].nchildren < 8)
                gpus[d->parent].children[gpus[d->parent].nchildren++] = d->index;
        } else if (!strcmp(word, "xid") && n_xids < MAX_XIDS) {
            xid_gpu[n_xids] = 0;
            xid_code[n_xids] = 0;
            while (next_token(&cursor, &k, &v)) {
                if (!strcmp(k, "gpu")) xid_gpu[n_xids] = atoi(v);
                if (!strcmp(k, "code")) xid_code[n_xids] = strtoull(v, NULL, 0);
            }
            n_xids++;
        } else if (!strcmp(word, "proc") && n_procs < MAX_PROCS) {
            proc_gpu[n_procs] = 0; proc_pid[n_procs] = 0; proc_mem[n_procs] = 0;
            while (next_token(&cursor, &k, &v)) {
                if (!strcmp(k, "gpu")) proc_gpu[n_procs] = atoi(v);
                if (!strcmp(k, "pid")) proc_pid[n_procs] = (unsigned)strtoul(v, NULL, 0);
                if (!strcmp(k, "mem")) proc_mem[n_procs] = strtoull(v, NULL, 0);
            }
            n_procs++;
        }
    }
    fclose(f);
    n_gpus = gpu_count;
    n_migs = mig_count;
}

/* Re-read the configuration when the file changed (a writer replaces it atomically). */
static void refresh(void) {
    const char *path = getenv("NVML_STUB_CONFIG");
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    if (st.st_ino == loaded_ino && st.st_size == loaded_size && st.st_mtim.tv_sec == loaded_mtime.tv_sec &&
        st.st_mtim.tv_nsec == loaded_mtime.tv_nsec)
        return;
    load(path);
    loaded_ino = st.st_ino;
    loaded_size = st.st_size;
    loaded_mtime = st.st_mtim;
}

static int valid(nvmlDevice_t d) {
    return d && ((d >= gpus && d < gpus + MAX_GPUS) || (d >= migs && d < migs + MAX_MIGS));
}

/* Lock, refresh, simulate a hang, then check the device: returns with the lock held. */
static nvmlReturn_t enter(nvmlDevice_t d, unsigned what) {
    pthread_mutex_lock(&lock);
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    refresh();
    if (!valid(d)) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->hang_ms > 0) {
        int ms = d->hang_ms;
        pthread_mutex_unlock(&lock);
        usleep((useconds_t)ms * 1000);
        pthread_mutex_lock(&lock);
    }
    if (d->lost || (d->is_mig && d->parent >= 0 && gpus[d->parent].lost)) return NVML_ERROR_GPU_IS_LOST;
    if ((d->unsupported & what) || (d->is_mig && (what & MIG_UNSUPPORTED))) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

#define ENTER(d, what)                              \
    nvmlReturn_t rc_ = enter((d), (what));          \
    if (rc_ != NVML_SUCCESS) {                      \
        pthread_mutex_unlock(&lock);                \
        return rc_;                                 \
    }
#define LEAVE                                       \
    pthread_mutex_unlock(&lock);                    \
    return NVML_SUCCESS

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&lock);
    loaded_size = -1; /* always re-read on init, as a driver reload would */
    refresh();
    if (no_driver) { pthread_mutex_unlock(&lock); return NVML_ERROR_DRIVER_NOT_LOADED; }
    initialised++;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
    initialised--;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    pthread_mutex_lock(&lock);
    if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
    snprintf(version, length, "%s", driver);
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    pthread_mutex_lock(&lock);
    if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
    refresh();
    *count = (unsigned)n_gpus;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    pthread_mutex_lock(&lock);
    if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
    refresh();
    if (index >= (unsigned)n_gpus) { pthread_mutex_unlock(&lock); return NVML_ERROR_INVALID_ARGUMENT; }
    pthread_mutex_unlock(&lock);
    ENTER(&gpus[index], 0);
    *device = &gpus[index];
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    ENTER(d, 0);
    *index = (unsigned)(d->is_mig ? d->parent : d->index);
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER(d, 0);
    snprintf(uuid, length, "%s", d->uuid);
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER(d, 0);
    snprintf(name, length, "%s", d->name);
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    ENTER(d, 0);
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", d->is_mig ? gpus[d->parent].pci : d->pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%.15s", pci->busId);
    pci->pciDeviceId = 0x20b010de;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *utilization) {
    ENTER(d, U_UTIL);
    utilization->gpu = d->util;
    utilization->memory = d->memutil;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    ENTER(d, U_MEMORY);
    memory->total = d->mem_total;
    memory->used = d->mem_used;
    memory->free = d->mem_total > d->mem_used ? d->mem_total - d->mem_used : 0;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
    ENTER(d, U_POWER);
    *power = d->power;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *energy) {
    ENTER(d, U_ENERGY);
    *energy = d->energy;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, nvmlTemperatureSensors_t sensor, unsigned int *temp) {
    ENTER(d, U_TEMP);
    if (sensor != NVML_TEMPERATURE_GPU) { pthread_mutex_unlock(&lock); return NVML_ERROR_INVALID_ARGUMENT; }
    *temp = d->temp;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, nvmlClockType_t type, unsigned int *clock) {
    ENTER(d, U_CLOCK);
    *clock = type == NVML_CLOCK_SM ? d->sm : 0;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, nvmlMemoryErrorType_t type, nvmlEccCounterType_t counter,
                                         unsigned long long *count) {
    ENTER(d, U_ECC);
    (void)counter;
    *count = type == NVML_MEMORY_ERROR_TYPE_CORRECTED ? d->ecc_corrected : d->ecc_uncorrected;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *reasons) {
    ENTER(d, U_THROTTLE);
    *reasons = d->throttle;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksEventReasons(d, reasons);
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    ENTER(d, 0);
    if (d->is_mig) { pthread_mutex_unlock(&lock); return NVML_ERROR_NOT_SUPPORTED; }
    *current = *pending = d->nchildren > 0;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    ENTER(d, 0);
    *count = d->nchildren > 0 ? 7 : 0;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *mig) {
    ENTER(d, 0);
    if (index >= (unsigned)d->nchildren) { pthread_mutex_unlock(&lock); return NVML_ERROR_NOT_FOUND; }
    *mig = &migs[d->children[index]];
    LEAVE;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is_mig) {
    ENTER(d, 0);
    *is_mig = (unsigned)d->is_mig;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d, 0);
    if (!d->is_mig) { pthread_mutex_unlock(&lock); return NVML_ERROR_NOT_SUPPORTED; }
    *id = (unsigned)d->gi;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d, 0);
    if (!d->is_mig) { pthread_mutex_unlock(&lock); return NVML_ERROR_NOT_SUPPORTED; }
    *id = (unsigned)d->ci;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count, nvmlProcessInfo_t *infos) {
    ENTER(d, U_PROCS);
    unsigned found = 0;
    for (int i = 0; i < n_procs; i++) {
        if (proc_gpu[i] != d->index) continue;
        if (infos && found < *count) {
            infos[found].pid = proc_pid[i];
            infos[found].usedGpuMemory = proc_mem[i];
            infos[found].gpuInstanceId = 0xFFFFFFFF;
            infos[found].computeInstanceId = 0xFFFFFFFF;
        }
        found++;
    }
    if (!infos || found > *count) {
        *count = found;
        pthread_mutex_unlock(&lock);
        return found ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    *count = found;
    LEAVE;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types) {
    ENTER(d, U_EVENTS);
    *types = nvmlEventTypeXidCriticalError | nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError;
    LEAVE;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    pthread_mutex_lock(&lock);
    if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
    refresh();
    *set = calloc(1, sizeof **set);
    (*set)->delivered = n_xids; /* a new set only sees events from now on */
    LEAVE;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    ENTER(d, U_EVENTS);
    (void)types;
    (void)set;
    LEAVE;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        pthread_mutex_lock(&lock);
        if (!initialised) { pthread_mutex_unlock(&lock); return NVML_ERROR_UNINITIALIZED; }
        refresh();
        if (set->delivered > n_xids) set->delivered = n_xids; /* the script was rewritten */
        if (set->delivered < n_xids) {
            int i = set->delivered++;
            memset(data, 0, sizeof *data);
            data->device = &gpus[xid_gpu[i] < MAX_GPUS ? xid_gpu[i] : 0];
            data->eventType = nvmlEventTypeXidCriticalError;
            data->eventData = xid_code[i];
            data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFF;
            LEAVE;
        }
        pthread_mutex_unlock(&lock);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= (long)timeoutms) return NVML_ERROR_TIMEOUT;
        usleep(100000); /* the driver blocks on an fd; a stub that polls must not dominate idle CPU */
    }
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    free(set);
    return NVML_SUCCESS;
}
