/*
 * garden_node.ino: one Garden Commons bed node.
 *
 * Reads a capacitive soil probe (A0), a DS18B20 soil thermometer (1-Wire), an
 * SHT3x air temperature/humidity sensor and a BH1750 light sensor (I2C), a
 * JSN-SR04T / HC-SR04 ultrasonic ranger over the water tank (trig/echo) and
 * the battery (A1, through a divider), and sends them to the bridge over the
 * serial port as protocol lines (firmware_bridge/line_protocol.py):
 *
 *   at boot          $GH,1,<node>,0,fw=...,sensors=sm0;st0;at0;rh0;lx0;tk0;bt0,interval_s=N
 *   every interval   $GD,1,<node>,<seq>,sm0=412,st0=14.5,...     (seq 1, 2, 3, ...)
 *   on a command     $GC,<node>,<seq>,SET,interval_s=N  ->  $GA,<node>,<seq>,OK | ERR,<reason>
 *   on a GK          $GK,<node>,<seq>  ->  (no answer) forget the readings up to <seq>
 *   host back        $GR,1,<node>,<seq>,...  each reading not yet stored, oldest first
 *
 * Store and forward (docs/protocol.md): a reading is not safe until the host
 * has stored it, so each one sent is kept (gc_store, in RAM: 8 on an AVR, 64
 * elsewhere; when full the oldest goes) until a GK for it arrives, and what is
 * still kept when the host comes back is sent again as GR lines. "Comes back"
 * is the port being opened: on a native-USB board (ATmega32U4, SAMD, RP2040,
 * ESP32-S2/S3 with USB CDC) `Serial` turns true when the host raises DTR. On a
 * board behind a USB-serial chip `Serial` is always true, so there is no
 * replay; most of those boards (Uno, Nano, many ESP32 dev boards) are reset by
 * the chip when the port opens, and a reset empties the store anyway: the
 * readings sent while the host was away are lost there, as before.
 *
 * All framing, number formatting, command parsing and the store of unstored
 * readings is in gc_frame.c, which the host tests check against the Python
 * protocol (and the store against the simulated node) byte for byte; this
 * file only reads sensors, keeps time and watches for the host. Values are
 * raw (counts, degC, %, lx, cm, mV): the host calibrates. A sensor that cannot be read is sent as
 * key=na:<code>, never as a made-up number:
 *
 *   sm0  na:rail   ADC at 0 or full scale: probe unplugged or shorted
 *   st0  na:nc     DS18B20 not answering (the library's DEVICE_DISCONNECTED_C, -127)
 *        na:reset  85.0 degC, the scratchpad's power-on value: no conversion happened
 *        na:range  outside the DS18B20's -55..125 degC
 *   at0, rh0  na:nc     SHT3x did not answer or its CRC failed
 *             na:range  outside -40..125 degC / 0..100 %RH
 *   lx0  na:nc     BH1750 did not answer;  na:sat  saturated (bright sun past ~54.6 klx)
 *   tk0  na:echo   too few echoes;  na:range  outside the ranger's 20..600 cm
 *   bt0  na:rail   ADC at 0 or full scale
 *
 * Needs an Arduino core and the libraries listed in README.md; it is not
 * built in this repository's CI (no toolchain there), gc_frame.c is.
 */
#include <Arduino.h>
#include <Wire.h>
#include <OneWire.h>
#include <DallasTemperature.h>
#include <Adafruit_SHT31.h>
#include <BH1750.h>
#include <math.h>
#include <string.h>

#if defined(ARDUINO_ARCH_AVR) || defined(ESP8266) || defined(ESP32)
#include <EEPROM.h>
#define HAVE_EEPROM 1
#else
#define HAVE_EEPROM 0 /* the interval falls back to the default at boot; the bridge re-sends it */
#endif

#include "gc_frame.h"

/* ------------------------------------------------------------ settings */

#define NODE_ID "bed3-a"         /* [A-Za-z0-9_-]{1,32}, unique in the garden */
#define FW_VERSION "1.4.2"
#define SERIAL_BAUD 115200UL     /* the bridge's default bridge.baudrate */
#define DEFAULT_INTERVAL_S 300UL

static const uint8_t PIN_SOIL = A0;
static const uint8_t PIN_BATTERY = A1;
static const uint8_t PIN_ONE_WIRE = 2;
static const uint8_t PIN_TRIG = 5;
static const uint8_t PIN_ECHO = 6;

static const uint8_t SHT3X_ADDR = 0x44;  /* ADDR pin low; 0x45 when high (SHT3x datasheet, I2C address) */
static const uint8_t BH1750_ADDR = 0x23; /* ADDR pin low; 0x5C when high (BH1750FVI datasheet) */

/*
 * Battery divider: battery -> R_TOP -> A1 -> R_BOTTOM -> GND, measured
 * against the ADC reference (AVcc, so this assumes the board runs from a
 * regulator, not straight off the cell). The ATmega328P's ADC wants a
 * source impedance of 10 kOhm or less (datasheet, "Analog Input Circuitry"):
 * with 100k/100k put 100 nF from A1 to GND.
 */
#define ADC_REF_MV 5000UL /* 3300 on a 3.3 V board */
#define R_TOP_KOHM 100UL
#define R_BOTTOM_KOHM 100UL
#define ADC_STEPS 1024UL  /* ADC = Vin * 1024 / Vref (ATmega328P datasheet, "ADC Conversion Result") */

/* ---------------------------------------------------- timing constants */

/* DS18B20 datasheet: a 12-bit conversion takes at most 750 ms (tCONV). */
#define DS18B20_CONVERSION_MS 750UL
/* BH1750FVI datasheet: one-time H-resolution measurement, 120 ms typical, 180 ms max. */
#define BH1750_MEASURE_MS 180UL
/* HC-SR04 datasheet: "a short 10uS pulse to the trigger input". Some JSN-SR04T
 * boards (v2.0/v3.0) miss a 10 us pulse; 20 us suits both. */
#define TRIG_PULSE_US 20U
/* HC-SR04 datasheet: "over 60ms measurement cycle, in order to prevent trigger
 * signal to the echo signal". */
#define PING_GAP_MS 70UL
/* The echo for 600 cm (the JSN-SR04T's far end) returns after 2 * 6 m / 343 m/s
 * = 35 ms; give up a little later. */
#define ECHO_TIMEOUT_US 40000UL
#define PINGS 5
#define TANK_MIN_CM 20.0 /* JSN-SR04T blind zone: nearer echoes are not trustworthy */
#define TANK_MAX_CM 600.0

/* ----------------------------------------------------------- globals */

static OneWire one_wire(PIN_ONE_WIRE);
static DallasTemperature ds18b20(&one_wire);
static Adafruit_SHT31 sht3x;
static BH1750 bh1750(BH1750_ADDR);

static gc_rx rx;     /* host -> node bytes */
static gc_line tx;   /* one line out; never built while another is half built (see loop) */
static gc_store unstored; /* readings sent and not yet stored by the host (GK), for replay */

static uint32_t interval_s = DEFAULT_INTERVAL_S;
static uint32_t seq = 0;          /* 0 is the hello; data counts from 1 */
static uint32_t last_sample_ms = 0;
static bool sht3x_ok = false;
static bool host_present = false; /* the port is open, as far as this board can tell */
static uint32_t host_checked_ms = 0;

static const char *const SENSORS[] = {"sm0", "st0", "at0", "rh0", "lx0", "tk0", "bt0"};
enum { SM0, ST0, AT0, RH0, LX0, TK0, BT0, N_SENSORS };

static_assert(N_SENSORS <= GC_READING_VALUES, "gc_store keeps GC_READING_VALUES values a reading");

/* One value per sensor: thousandths, or the code of a failed reading (a string
 * literal: the store keeps the pointer). */
static gc_value readings[N_SENSORS];

static void set_value(uint8_t i, double value)
{
    int32_t milli;
    if (gc_milli_from_double(value, &milli) == GC_OK) {
        readings[i].milli = milli;
        readings[i].fail = NULL;
    } else {
        readings[i].fail = "range"; /* not finite or too big: never a number */
    }
}

static void set_fail(uint8_t i, const char *code)
{
    readings[i].milli = 0;
    readings[i].fail = code;
}

/* ------------------------------------------------------- persistence */

struct Persisted {
    uint16_t magic;
    uint32_t interval_s;
    uint16_t crc; /* gc_crc16 over the fields above */
};

static const uint16_t PERSIST_MAGIC = 0x4743; /* "GC" */

static uint16_t persisted_crc(const Persisted &p)
{
    return gc_crc16((const uint8_t *)&p, offsetof(Persisted, crc));
}

static void load_interval()
{
#if HAVE_EEPROM
    Persisted p;
#if defined(ESP8266) || defined(ESP32)
    EEPROM.begin(sizeof(Persisted));
#endif
    EEPROM.get(0, p);
    if (p.magic == PERSIST_MAGIC && p.crc == persisted_crc(p) && p.interval_s >= GC_INTERVAL_MIN
        && p.interval_s <= GC_INTERVAL_MAX) {
        interval_s = p.interval_s;
    }
#endif
}

static void save_interval()
{
#if HAVE_EEPROM
    Persisted p;
    EEPROM.get(0, p);
    if (p.magic == PERSIST_MAGIC && p.interval_s == interval_s && p.crc == persisted_crc(p)) {
        return; /* unchanged: spare the cells (ATmega328P EEPROM: 100,000 write/erase cycles) */
    }
    memset(&p, 0, sizeof p);
    p.magic = PERSIST_MAGIC;
    p.interval_s = interval_s;
    p.crc = persisted_crc(p);
    EEPROM.put(0, p); /* on AVR, put() rewrites only the bytes that differ */
#if defined(ESP8266) || defined(ESP32)
    EEPROM.commit();
#endif
#endif
}

/* ------------------------------------------------------------- output */

static void send_hello()
{
    gc_begin(&tx, GC_HELLO, NODE_ID, 0);
    gc_append_hello(&tx, FW_VERSION, SENSORS, N_SENSORS, interval_s);
    if (gc_finish(&tx) == GC_OK) {
        Serial.write((const uint8_t *)tx.buf, tx.len);
    }
    /* else: a frame the protocol cannot carry is dropped whole, never cut short */
}

static void send_data()
{
    seq++; /* wraps after 2^32 - 1 readings: 136 years at one a second */
    /* Builds the GD line and keeps the reading until the host says it stored it.
     * It is kept even if the host is not there to read it: that is the point. */
    if (gc_store_send(&unstored, &tx, seq, readings) == GC_OK) {
        Serial.write((const uint8_t *)tx.buf, tx.len);
    }
}

/*
 * Has the host come back? `Serial` is the port's state on native USB (DTR;
 * the AVR core's operator bool also waits 10 ms, hence the polling interval).
 * A close and reopen quicker than HOST_POLL_MS can go unseen; the bridge's
 * reopen takes longer than that, and it sends a GK when it is back anyway.
 * ESP32-C3/S3 on the USB-Serial-JTAG port (HWCDC) report the cable, not DTR:
 * they replay after a replug, not after a bridge restart.
 */
#define HOST_POLL_MS 250UL

static void check_host()
{
    bool present;
    if ((uint32_t)(millis() - host_checked_ms) < HOST_POLL_MS) return;
    host_checked_ms = millis();
    present = (bool)Serial;
    if (present && !host_present) gc_store_replay_start(&unstored);
    host_present = present;
}

/* At most one GR per pass of loop(), so GKs and commands are read in between:
 * a reading stored meanwhile is not sent again. */
static void replay_one()
{
    if (gc_store_replay_next(&unstored, &tx) == GC_OK) {
        Serial.write((const uint8_t *)tx.buf, tx.len);
    }
}

/* -------------------------------------------------------------- input */

static void handle_line()
{
    gc_command cmd;
    uint32_t wanted = 0;
    const char *reason;
    gc_cmd_status status = gc_parse_command(gc_rx_body(&rx), rx.body_len, &cmd);
    if (status == GC_CMD_STORED) {
        /* GK: the host has stored our readings up to cmd.seq. No answer. */
        if (strcmp(cmd.node_id, NODE_ID) == 0) gc_store_stored(&unstored, cmd.seq);
        return;
    }
    /* Rejected lines, and lines that are not commands, are ignored: the host
     * counts its own rejects and retries a command that got no ack. */
    if (status != GC_CMD_OK) return;
    if (strcmp(cmd.node_id, NODE_ID) != 0) return;
    reason = gc_command_interval(&cmd, &wanted);
    if (reason == NULL) {
        interval_s = wanted;
        save_interval();
    }
    if (gc_build_ack(&tx, NODE_ID, cmd.seq, reason) == GC_OK) {
        Serial.write((const uint8_t *)tx.buf, tx.len);
    }
}

/*
 * Read whatever the host sent. Called from every wait, so commands are seen
 * while sensors settle. The AVR core's receive buffer is 64 bytes: at 115200
 * baud that is 5.5 ms of line, and the longest blocking call here (one ping,
 * up to 40 ms) could lose bytes of a long line. A SET line is about 45
 * bytes, so it fits; anything lost shows up as a rejected line and the
 * bridge sends the command again (bridge.command_timeout_s, command_retries).
 */
static void pump_serial()
{
    while (Serial.available() > 0) {
        int c = Serial.read();
        if (c < 0) break;
        if (gc_rx_feed(&rx, (uint8_t)c) == GC_RX_LINE) handle_line();
    }
}

static void wait_ms(uint32_t ms)
{
    uint32_t start = millis();
    while ((uint32_t)(millis() - start) < ms) pump_serial();
}

/* ------------------------------------------------------------ sensors */

static int read_adc_mean(uint8_t pin)
{
    uint32_t sum = 0;
    uint8_t i;
    analogRead(pin); /* the first conversion after switching the channel is discarded */
    for (i = 0; i < 8; i++) sum += (uint32_t)analogRead(pin);
    return (int)((sum + 4u) / 8u);
}

static void read_soil_moisture()
{
    int raw = read_adc_mean(PIN_SOIL);
    if (raw <= 0 || raw >= 1023) {
        set_fail(SM0, "rail");
    } else {
        readings[SM0].milli = (int32_t)raw * 1000;
        readings[SM0].fail = NULL;
    }
}

static void read_battery()
{
    int raw = read_adc_mean(PIN_BATTERY);
    uint32_t mv;
    if (raw <= 0 || raw >= 1023) {
        set_fail(BT0, "rail");
        return;
    }
    mv = (uint32_t)raw * ADC_REF_MV * (R_TOP_KOHM + R_BOTTOM_KOHM) / (R_BOTTOM_KOHM * ADC_STEPS);
    readings[BT0].milli = (int32_t)mv * 1000;
    readings[BT0].fail = NULL;
}

static void read_air()
{
    float t = NAN, h = NAN;
    if (!sht3x_ok) sht3x_ok = sht3x.begin(SHT3X_ADDR); /* plugged in after boot */
    if (!sht3x_ok || !sht3x.readBoth(&t, &h) || isnan(t) || isnan(h)) {
        sht3x_ok = false;
        set_fail(AT0, "nc");
        set_fail(RH0, "nc");
        return;
    }
    /* SHT3x datasheet: specified -40..125 degC, 0..100 %RH. */
    if (t < -40.0f || t > 125.0f) set_fail(AT0, "range"); else set_value(AT0, t);
    if (h < 0.0f || h > 100.0f) set_fail(RH0, "range"); else set_value(RH0, h);
}

static void start_light()
{
    /* One-time mode powers the BH1750 down after each measurement; asking
     * again starts the next one. */
    if (!bh1750.configure(BH1750::ONE_TIME_HIGH_RES_MODE)) set_fail(LX0, "nc");
    else readings[LX0].fail = NULL;
}

static void read_light()
{
    float lux;
    if (readings[LX0].fail != NULL) return; /* configure() already failed */
    lux = bh1750.readLightLevel();
    if (lux < 0.0f) {
        set_fail(LX0, "nc"); /* -1: no data, -2: not configured (library) */
    } else if (lux >= 54612.0f) {
        set_fail(LX0, "sat"); /* 65535 counts / 1.2: the ceiling, not a reading */
    } else {
        set_value(LX0, lux);
    }
}

static uint32_t ping_us()
{
    digitalWrite(PIN_TRIG, LOW);
    delayMicroseconds(4);
    digitalWrite(PIN_TRIG, HIGH);
    delayMicroseconds(TRIG_PULSE_US);
    digitalWrite(PIN_TRIG, LOW);
    return pulseIn(PIN_ECHO, HIGH, ECHO_TIMEOUT_US); /* 0 on timeout */
}

static void read_tank()
{
    uint32_t echoes[PINGS];
    uint8_t n = 0, i, j;
    double air_c = readings[AT0].fail == NULL ? readings[AT0].milli / 1000.0 : 20.0;
    /* Speed of sound in air, m/s: 331.3 + 0.606 * T(degC). */
    double sound_m_s = 331.3 + 0.606 * air_c;
    double cm;
    for (i = 0; i < PINGS; i++) {
        uint32_t us = ping_us();
        if (us > 0) echoes[n++] = us;
        wait_ms(PING_GAP_MS);
    }
    if (n < 3) {
        set_fail(TK0, "echo");
        return;
    }
    for (i = 1; i < n; i++) { /* insertion sort; the median drops stray echoes */
        uint32_t v = echoes[i];
        for (j = i; j > 0 && echoes[j - 1] > v; j--) echoes[j] = echoes[j - 1];
        echoes[j] = v;
    }
    /* There and back: cm = us * 1e-6 s * sound m/s * 100 cm/m / 2. */
    cm = (double)echoes[n / 2] * sound_m_s / 20000.0;
    if (cm < TANK_MIN_CM || cm > TANK_MAX_CM) {
        set_fail(TK0, "range");
        return;
    }
    /* Millimetres are the most the ranger resolves: send tenths of a cm. */
    readings[TK0].milli = (int32_t)lround(cm * 10.0) * 100;
    readings[TK0].fail = NULL;
}

static void read_soil_temp()
{
    float t = ds18b20.getTempCByIndex(0);
    if (t == DEVICE_DISCONNECTED_C) {
        set_fail(ST0, "nc");
    } else if (t == 85.0f) {
        set_fail(ST0, "reset");
    } else if (t < -55.0f || t > 125.0f) {
        set_fail(ST0, "range");
    } else {
        /* 1/16 degC steps: 14.0625 is sent as "14.062", as Python prints it. */
        set_value(ST0, t);
    }
}

/* One reading of every sensor, about 1.2 s, serving the serial port throughout. */
static void sample()
{
    uint32_t ds_started;
    ds18b20.requestTemperatures();
    ds_started = millis();

    read_soil_moisture();
    read_battery();
    read_air();          /* before the tank: the speed of sound needs the air temperature */
    start_light();
    wait_ms(BH1750_MEASURE_MS);
    read_light();
    read_tank();
    while ((uint32_t)(millis() - ds_started) < DS18B20_CONVERSION_MS) pump_serial();
    read_soil_temp();
}

/* ------------------------------------------------------- setup / loop */

void setup()
{
    Serial.begin(SERIAL_BAUD);
    gc_rx_init(&rx);
    gc_store_init(&unstored, NODE_ID, SENSORS, N_SENSORS); /* a reboot empties it: RAM */
    load_interval();

    pinMode(PIN_TRIG, OUTPUT);
    digitalWrite(PIN_TRIG, LOW);
    pinMode(PIN_ECHO, INPUT);

    Wire.begin();
    sht3x_ok = sht3x.begin(SHT3X_ADDR);
    /* begin()'s address argument defaults to 0x23 and overrides the constructor's. */
    bh1750.begin(BH1750::ONE_TIME_HIGH_RES_MODE, BH1750_ADDR);
    ds18b20.begin();
    ds18b20.setResolution(12);
    ds18b20.setWaitForConversion(false); /* sample() waits, serving the serial port meanwhile */

    seq = 0;
    send_hello();
    host_present = (bool)Serial; /* nothing is kept yet: nothing to replay if it is there */
    host_checked_ms = millis();
    last_sample_ms = millis() - interval_s * 1000UL; /* first reading right away */
}

void loop()
{
    uint32_t interval_ms;
    pump_serial();
    check_host();
    replay_one();
    interval_ms = interval_s * 1000UL; /* 86,400,000 at most: fits, and millis() wraps cleanly */
    if ((uint32_t)(millis() - last_sample_ms) >= interval_ms) {
        /* Keep to the grid unless a whole interval was missed (a new, shorter
         * interval, or a long stall): then start again from now. */
        last_sample_ms += interval_ms;
        if ((uint32_t)(millis() - last_sample_ms) >= interval_ms) last_sample_ms = millis();
        sample();
        send_data();
    }
}
